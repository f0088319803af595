//! TLS 1.3 records after the handshake, sealed and opened by us in the stream's buffers.
//!
//! rustls runs the handshake; once it completes, its traffic keys are taken over through
//! `dangerous_into_kernel_connection`, the interface rustls offers for kernel TLS, and
//! records are sealed in place in the stream's outbox and opened in place in its inbox.
//! A byte written is copied once (into the outbox, where it is encrypted), a byte read is
//! copied once (out of the inbox, where it was decrypted): rustls 0.23's own record layer
//! copies every record into a buffer of its own on both paths, a third of the cost of a
//! bulk transfer. rustls keeps what only it can do: the next keys at a key update, and a
//! client's store of session tickets.
//!
//! The record layer is RFC 8446 section 5: an outer header `17 03 03 LEN`, the plaintext,
//! its content type and no padding, sealed with the traffic key under the IV XOR the
//! record's sequence number, the header as additional data. After the handshake a peer may
//! send application data, alerts, session tickets (to a client) and key updates; anything
//! else ends the session with the alert RFC 8446 names.

use std::ops::Range;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use rustls::client::ClientConnectionData;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};

/// The record header: content type, legacy version, length.
pub(crate) const HEADER: usize = 5;
/// The AEAD tag every suite of TLS 1.3 appends.
pub(crate) const TAG: usize = 16;
/// The most plaintext a record carries.
pub(crate) const MAX_PLAINTEXT: usize = 16 * 1024;
/// The most a record adds to its plaintext: header, content type, tag.
pub(crate) const OVERHEAD: usize = HEADER + 1 + TAG;
/// The longest ciphertext a peer may send (RFC 8446 5.2).
const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
/// Handshake bytes held while a post-handshake message arrives in pieces.
const MAX_HANDSHAKE: usize = 64 * 1024;
/// Records sealed under one key stop this far short of the suite's confidentiality limit
/// (a key update goes first), so that one write's records never cross it.
const LIMIT_MARGIN: u64 = 1024;

const APPLICATION_DATA: u8 = 23;
const HANDSHAKE: u8 = 22;
const ALERT: u8 = 21;
const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;

/// The alerts this layer sends (RFC 8446 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alert {
    CloseNotify = 0,
    UnexpectedMessage = 10,
    BadRecordMac = 20,
    RecordOverflow = 22,
    DecodeError = 50,
    InternalError = 80,
}

/// Why the session ended: what to tell the peer, and what to tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fatal {
    /// The alert owed to the peer; `None` when the peer's own alert ended it.
    pub(crate) alert: Option<Alert>,
    pub(crate) reason: String,
}

impl Fatal {
    fn new(alert: Alert, reason: impl Into<String>) -> Fatal {
        Fatal {
            alert: Some(alert),
            reason: reason.into(),
        }
    }
}

/// What an opened record held.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opened {
    /// Application data at this range of the record.
    Data(Range<usize>),
    /// A session ticket or a key update, handled.
    Handshake,
    /// The peer's close_notify.
    PeerClosed,
}

/// The rustls side of a taken-over session, whichever side it is.
pub(crate) enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
}

impl Kernel {
    fn confidentiality_limit(&self) -> u64 {
        let suite = match self {
            Kernel::Client(k) => k.negotiated_cipher_suite(),
            Kernel::Server(k) => k.negotiated_cipher_suite(),
        };
        suite
            .tls13()
            .map_or(u64::MAX, |s| s.common.confidentiality_limit)
    }

    fn next_secrets(&mut self, send: bool) -> Result<ConnectionTrafficSecrets, rustls::Error> {
        let next = match (self, send) {
            (Kernel::Client(k), true) => k.update_tx_secret(),
            (Kernel::Client(k), false) => k.update_rx_secret(),
            (Kernel::Server(k), true) => k.update_tx_secret(),
            (Kernel::Server(k), false) => k.update_rx_secret(),
        };
        next.map(|(_, secrets)| secrets)
    }
}

/// One direction's key, IV and next sequence number.
struct Keys {
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
    seq: u64,
}

impl Keys {
    fn new(secrets: &ConnectionTrafficSecrets, seq: u64) -> Result<Keys, rustls::Error> {
        let (algorithm, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(rustls::Error::General("unsupported TLS 1.3 cipher".into())),
        };
        let key = UnboundKey::new(algorithm, key.as_ref())
            .map_err(|_| rustls::Error::General("TLS traffic key of the wrong length".into()))?;
        let iv = iv
            .as_ref()
            .try_into()
            .map_err(|_| rustls::Error::General("TLS traffic IV of the wrong length".into()))?;
        Ok(Keys {
            key: LessSafeKey::new(key),
            iv,
            seq,
        })
    }

    /// The nonce of the next record (RFC 8446 5.3), which it then counts.
    fn next_nonce(&mut self) -> Nonce {
        let mut nonce = self.iv;
        for (n, s) in nonce[NONCE_LEN - 8..]
            .iter_mut()
            .zip(self.seq.to_be_bytes())
        {
            *n ^= s;
        }
        self.seq += 1;
        Nonce::assume_unique_for_key(nonce)
    }
}

/// The record layer of a session whose handshake rustls completed.
pub(crate) struct Records {
    kernel: Kernel,
    tx: Keys,
    rx: Keys,
    /// Records sealed under one key before a key update is due.
    tx_limit: u64,
    /// A post-handshake message received in part.
    handshake: Vec<u8>,
    /// A key update the peer asked for, to send before the next record.
    update_requested: bool,
}

impl Records {
    /// Takes over a session from its extracted secrets.
    pub(crate) fn new(kernel: Kernel, secrets: ExtractedSecrets) -> Result<Records, rustls::Error> {
        let tx = Keys::new(&secrets.tx.1, secrets.tx.0)?;
        let rx = Keys::new(&secrets.rx.1, secrets.rx.0)?;
        let tx_limit = kernel
            .confidentiality_limit()
            .saturating_sub(LIMIT_MARGIN)
            .max(1);
        Ok(Records {
            kernel,
            tx,
            rx,
            tx_limit,
            handshake: Vec::new(),
            update_requested: false,
        })
    }

    /// The length of the record at the front of `input` if it is all there, `None` if more
    /// bytes must come first.
    pub(crate) fn record_len(input: &[u8]) -> Result<Option<usize>, Fatal> {
        let Some(header) = input.get(..HEADER) else {
            return Ok(None);
        };
        if header[0] != APPLICATION_DATA {
            return Err(Fatal::new(
                Alert::UnexpectedMessage,
                format!(
                    "received an unprotected TLS record (type {}) after the handshake",
                    header[0]
                ),
            ));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len > MAX_CIPHERTEXT {
            return Err(Fatal::new(
                Alert::RecordOverflow,
                format!("received a TLS record of {len} bytes, over the limit of {MAX_CIPHERTEXT}"),
            ));
        }
        if len < TAG + 1 {
            return Err(Fatal::new(
                Alert::DecodeError,
                format!("received a TLS record of {len} bytes, too short for its tag"),
            ));
        }
        Ok((input.len() >= HEADER + len).then_some(HEADER + len))
    }

    /// Opens the whole record `record` (as measured by [`Records::record_len`]) in place.
    /// Records to send in answer (a key update the peer asked for) are owed: see
    /// [`Records::owes_key_update`].
    pub(crate) fn open(&mut self, record: &mut [u8]) -> Result<Opened, Fatal> {
        let (header, body) = record.split_at_mut(HEADER);
        let mut aad = [0; HEADER];
        aad.copy_from_slice(header);
        let aad = Aad::from(aad);
        let nonce = self.rx.next_nonce();
        let plain = self.rx.key.open_in_place(nonce, aad, body).map_err(|_| {
            Fatal::new(
                Alert::BadRecordMac,
                "a TLS record failed its integrity check (corrupted or forged)",
            )
        })?;
        // The content type is the last byte that is not padding.
        let Some(end) = plain.iter().rposition(|&b| b != 0) else {
            return Err(Fatal::new(
                Alert::UnexpectedMessage,
                "a TLS record carried no content type",
            ));
        };
        let content_type = plain[end];
        match content_type {
            APPLICATION_DATA => {
                if end > MAX_PLAINTEXT {
                    return Err(Fatal::new(
                        Alert::RecordOverflow,
                        format!("a TLS record carried {end} bytes, over the limit of 16384"),
                    ));
                }
                Ok(Opened::Data(HEADER..HEADER + end))
            }
            ALERT => match plain[..end] {
                [_, 0] => Ok(Opened::PeerClosed),
                [_, description] => Err(Fatal {
                    alert: None,
                    reason: rustls::Error::AlertReceived(description.into()).to_string(),
                }),
                _ => Err(Fatal::new(Alert::DecodeError, "a malformed TLS alert")),
            },
            HANDSHAKE => {
                if end == 0 {
                    return Err(Fatal::new(
                        Alert::UnexpectedMessage,
                        "an empty TLS handshake record",
                    ));
                }
                if self.handshake.len() + end > MAX_HANDSHAKE {
                    return Err(Fatal::new(
                        Alert::UnexpectedMessage,
                        "a post-handshake TLS message over 64 KiB",
                    ));
                }
                self.handshake.extend_from_slice(&plain[..end]);
                self.handle_handshake()?;
                Ok(Opened::Handshake)
            }
            other => Err(Fatal::new(
                Alert::UnexpectedMessage,
                format!("a TLS record of content type {other} after the handshake"),
            )),
        }
    }

    /// Handles the whole post-handshake messages held.
    fn handle_handshake(&mut self) -> Result<(), Fatal> {
        let mut at = 0;
        while let [kind, a, b, c, ref rest @ ..] = self.handshake[at..] {
            let len = u32::from_be_bytes([0, a, b, c]) as usize;
            if rest.len() < len {
                break;
            }
            let body = &rest[..len];
            match (kind, &mut self.kernel) {
                (NEW_SESSION_TICKET, Kernel::Client(k)) => {
                    k.handle_new_session_ticket(body).map_err(|e| {
                        Fatal::new(Alert::DecodeError, format!("a TLS session ticket: {e}"))
                    })?;
                }
                (KEY_UPDATE, kernel) => {
                    let request = match body {
                        [0] => false,
                        [1] => true,
                        _ => {
                            return Err(Fatal::new(
                                Alert::DecodeError,
                                "a malformed TLS key update",
                            ))
                        }
                    };
                    // A key update ends the record's key: nothing may follow it there.
                    if at + 4 + len != self.handshake.len() {
                        return Err(Fatal::new(
                            Alert::UnexpectedMessage,
                            "TLS handshake data after a key update in one record",
                        ));
                    }
                    let next = kernel.next_secrets(false).map_err(internal)?;
                    self.rx = Keys::new(&next, 0).map_err(internal)?;
                    self.update_requested |= request;
                }
                (kind, _) => {
                    return Err(Fatal::new(
                        Alert::UnexpectedMessage,
                        format!("TLS handshake message {kind} after the handshake"),
                    ))
                }
            }
            at += 4 + len;
        }
        self.handshake.drain(..at);
        Ok(())
    }

    /// Whether a key update must be sent before the next record: the peer asked for one, or
    /// the key is near its confidentiality limit.
    pub(crate) fn owes_key_update(&self) -> bool {
        self.update_requested || self.tx.seq >= self.tx_limit
    }

    /// Seals a key update (not asking the peer for one) into `record`, which must be
    /// [`KEY_UPDATE_RECORD`] bytes long, and moves on to the next key.
    pub(crate) fn seal_key_update(&mut self, record: &mut [u8]) -> Result<(), Fatal> {
        record[HEADER..HEADER + 5].copy_from_slice(&[KEY_UPDATE, 0, 0, 1, 0]);
        self.seal(record, HANDSHAKE)?;
        let next = self.kernel.next_secrets(true).map_err(internal)?;
        self.tx = Keys::new(&next, 0).map_err(internal)?;
        self.update_requested = false;
        Ok(())
    }

    /// Seals `record` in place: its plaintext is at `record[HEADER..len - 1 - TAG]`; the
    /// header, content type and tag are written here.
    pub(crate) fn seal(&mut self, record: &mut [u8], content_type: u8) -> Result<(), Fatal> {
        let plain = record.len() - OVERHEAD;
        let ciphertext = plain + 1 + TAG;
        let header = [
            APPLICATION_DATA,
            3,
            3,
            (ciphertext >> 8) as u8,
            ciphertext as u8,
        ];
        record[..HEADER].copy_from_slice(&header);
        record[HEADER + plain] = content_type;
        let nonce = self.tx.next_nonce();
        let (body, tag) = record[HEADER..].split_at_mut(plain + 1);
        let sealed = self
            .tx
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), body)
            .map_err(|_| Fatal::new(Alert::InternalError, "TLS record encryption failed"))?;
        tag.copy_from_slice(sealed.as_ref());
        Ok(())
    }

    /// Seals the alert `alert` into `record` ([`ALERT_RECORD`] bytes long).
    pub(crate) fn seal_alert(&mut self, record: &mut [u8], alert: Alert) -> Result<(), Fatal> {
        let level = if alert == Alert::CloseNotify { 1 } else { 2 };
        record[HEADER..HEADER + 2].copy_from_slice(&[level, alert as u8]);
        self.seal(record, ALERT)
    }

    /// Frees the buffer of a post-handshake message when none is in part.
    pub(crate) fn release_idle_memory(&mut self) {
        if self.handshake.is_empty() {
            self.handshake = Vec::new();
        }
    }

    /// Makes a key update due after `records` more records (tests of the key update).
    #[cfg(test)]
    pub(crate) fn update_key_after(&mut self, records: u64) {
        self.tx_limit = self.tx.seq + records;
    }

    /// The sequence numbers of the next record each way (they restart at a key update).
    #[cfg(test)]
    pub(crate) fn sequence_numbers(&self) -> (u64, u64) {
        (self.tx.seq, self.rx.seq)
    }
}

/// The length of a sealed key update record.
pub(crate) const KEY_UPDATE_RECORD: usize = 5 + OVERHEAD;
/// The length of a sealed alert record.
pub(crate) const ALERT_RECORD: usize = 2 + OVERHEAD;
/// The content type of application data, for [`Records::seal`].
pub(crate) const DATA: u8 = APPLICATION_DATA;

fn internal(e: rustls::Error) -> Fatal {
    Fatal::new(Alert::InternalError, format!("TLS key update: {e}"))
}
