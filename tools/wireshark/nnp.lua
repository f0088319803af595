-- Wireshark dissector for NNP, the Neural Network Protocol (version 1; docs/PROTOCOL.md).
--
-- Install: copy this file into Wireshark's personal Lua plugins folder (Help > About
-- Wireshark > Folders > "Personal Lua Plugins", e.g. ~/.local/lib/wireshark/plugins/), or
-- load it for one run: tshark -X lua_script:tools/wireshark/nnp.lua -r capture.pcap
--
-- NNP is found on any TCP port by its magic "NNP\0" and version 1 at the start of a
-- segment; "Decode As... > NNP" forces it on a port. Frames split across segments are
-- reassembled, several frames in one segment are dissected one after the other, every
-- frame's CRC-32 is checked (nnp.checksum.status: 1 good, 0 bad), and malformed frames get
-- expert info. Filter examples: nnp.type == 0x10, nnp.seq == 5, nnp.forward.layer_id == 0,
-- nnp.checksum.status == 0, nnp.error.code == 11.

local nnp = Proto("nnp", "Neural Network Protocol")

local bit = bit or bit32

local HEADER_LEN = 22
local MAGIC = "NNP\0"
-- Values of one array shown as items; the rest are summarised in one line.
local MAX_ARRAY_ITEMS = 4096

local msg_types = {
    [0x01] = "Handshake",
    [0x02] = "HandshakeAck",
    [0x03] = "Auth",
    [0x10] = "ForwardData",
    [0x11] = "BackwardData",
    [0x12] = "HebbianData",
    [0x13] = "WeightSync",
    [0x20] = "Heartbeat",
    [0x21] = "Disconnect",
    [0xFF] = "Error",
}

local error_codes = {
    [1] = "BAD_MAGIC",
    [2] = "UNSUPPORTED_VERSION",
    [3] = "UNKNOWN_MESSAGE_TYPE",
    [4] = "FRAME_TOO_LARGE",
    [5] = "CHECKSUM_MISMATCH",
    [6] = "MALFORMED_PAYLOAD",
    [7] = "SEQUENCE_ERROR",
    [8] = "UNEXPECTED_MESSAGE",
    [9] = "CAPABILITY_NOT_AGREED",
    [10] = "TIMEOUT",
    [11] = "APPLICATION",
    [12] = "AUTHENTICATION_FAILED",
}

local disconnect_reasons = {
    [0] = "NORMAL",
    [1] = "SHUTDOWN",
    [2] = "IDLE_TIMEOUT",
    [3] = "PROTOCOL_ERROR",
    [4] = "OVERLOADED",
}

local sync_modes = { [0] = "Replace", [1] = "Average" }
local encodings = { [0] = "f32 little-endian" }
local checksum_status = { [0] = "Bad", [1] = "Good" }

local capability_names = {
    { 0x01, "forward_propagation", "FORWARD_PROPAGATION" },
    { 0x02, "backpropagation", "BACKPROPAGATION" },
    { 0x04, "hebbian_learning", "HEBBIAN_LEARNING" },
    { 0x08, "weight_sync", "WEIGHT_SYNC" },
    { 0x10, "correlation_analysis", "CORRELATION_ANALYSIS" },
    { 0x20, "multi_layer", "MULTI_LAYER" },
    { 0x40, "real_time", "REAL_TIME" },
    { 0x80, "compression", "COMPRESSION" },
    { 0x100, "authentication", "AUTHENTICATION" },
}

local f = {
    -- header
    magic = ProtoField.bytes("nnp.magic", "Magic"),
    version = ProtoField.uint8("nnp.version", "Version"),
    type = ProtoField.uint8("nnp.type", "Type", base.HEX, msg_types),
    length = ProtoField.uint32("nnp.length", "Payload length"),
    seq = ProtoField.uint64("nnp.seq", "Sequence"),
    checksum = ProtoField.uint32("nnp.checksum", "Checksum", base.HEX),
    checksum_computed = ProtoField.uint32("nnp.checksum.computed", "Computed checksum", base.HEX),
    checksum_status = ProtoField.uint8("nnp.checksum.status", "Checksum status", base.DEC, checksum_status),
    padding = ProtoField.bytes("nnp.padding", "Padding"),
    -- Handshake and HandshakeAck
    hello_name_len = ProtoField.uint16("nnp.hello.name_len", "Name length"),
    hello_node_id = ProtoField.uint64("nnp.hello.node_id", "Node id", base.HEX),
    hello_capabilities = ProtoField.uint32("nnp.hello.capabilities", "Capabilities", base.HEX),
    hello_min_version = ProtoField.uint8("nnp.hello.min_version", "Min version"),
    hello_max_version = ProtoField.uint8("nnp.hello.max_version", "Max version"),
    hello_reserved = ProtoField.uint16("nnp.hello.reserved", "Reserved", base.HEX),
    hello_layer_count = ProtoField.uint32("nnp.hello.layer_count", "Layer count"),
    hello_layer_size = ProtoField.uint32("nnp.hello.layer_size", "Layer size"),
    hello_name = ProtoField.string("nnp.hello.name", "Name", base.UNICODE),
    -- ForwardData, BackwardData
    forward_layer_id = ProtoField.uint16("nnp.forward.layer_id", "Layer id"),
    forward_value = ProtoField.float("nnp.forward.value", "Value"),
    backward_layer_id = ProtoField.uint16("nnp.backward.layer_id", "Layer id"),
    backward_value = ProtoField.float("nnp.backward.value", "Value"),
    value_count = ProtoField.uint32("nnp.value_count", "Values"),
    -- HebbianData
    hebbian_layer_id = ProtoField.uint16("nnp.hebbian.layer_id", "Layer id"),
    hebbian_learning_rate = ProtoField.float("nnp.hebbian.learning_rate", "Learning rate"),
    hebbian_rows = ProtoField.uint32("nnp.hebbian.rows", "Rows"),
    hebbian_cols = ProtoField.uint32("nnp.hebbian.cols", "Cols"),
    hebbian_correlation = ProtoField.float("nnp.hebbian.correlation", "Correlation"),
    -- WeightSync
    sync_layer_id = ProtoField.uint16("nnp.weight_sync.layer_id", "Layer id"),
    sync_encoding = ProtoField.uint8("nnp.weight_sync.encoding", "Encoding", base.DEC, encodings),
    sync_mode = ProtoField.uint8("nnp.weight_sync.mode", "Mode", base.DEC, sync_modes),
    sync_reserved = ProtoField.uint16("nnp.weight_sync.reserved", "Reserved", base.HEX),
    sync_rows = ProtoField.uint32("nnp.weight_sync.rows", "Rows"),
    sync_cols = ProtoField.uint32("nnp.weight_sync.cols", "Cols"),
    sync_offset = ProtoField.uint32("nnp.weight_sync.offset", "Offset"),
    sync_sample_count = ProtoField.uint32("nnp.weight_sync.sample_count", "Sample count"),
    sync_value = ProtoField.float("nnp.weight_sync.value", "Value"),
    -- Heartbeat
    heartbeat_flags = ProtoField.uint16("nnp.heartbeat.flags", "Flags", base.HEX),
    heartbeat_reply = ProtoField.bool("nnp.heartbeat.reply", "Reply", 16, nil, 0x0001),
    heartbeat_timestamp = ProtoField.uint64("nnp.heartbeat.timestamp_ns", "Timestamp (ns)"),
    -- Disconnect
    disconnect_reason = ProtoField.uint16("nnp.disconnect.reason", "Reason", base.DEC, disconnect_reasons),
    disconnect_text_len = ProtoField.uint32("nnp.disconnect.text_len", "Text length"),
    disconnect_text = ProtoField.string("nnp.disconnect.text", "Text", base.UNICODE),
    -- Error
    error_code = ProtoField.uint16("nnp.error.code", "Code", base.DEC, error_codes),
    error_text_len = ProtoField.uint32("nnp.error.text_len", "Text length"),
    error_text = ProtoField.string("nnp.error.text", "Text", base.UNICODE),
}
local capability_fields = {}
for _, c in ipairs(capability_names) do
    local field = ProtoField.bool("nnp.hello.capabilities." .. c[2], c[3], 32, nil, c[1])
    capability_fields[#capability_fields + 1] = field
    f["capability_" .. c[2]] = field
end

local field_list = {}
for _, field in pairs(f) do
    field_list[#field_list + 1] = field
end
nnp.fields = field_list

local e_checksum = ProtoExpert.new("nnp.checksum.bad.expert", "Bad checksum",
    expert.group.CHECKSUM, expert.severity.ERROR)
local e_malformed = ProtoExpert.new("nnp.malformed", "Malformed NNP frame",
    expert.group.MALFORMED, expert.severity.ERROR)
local e_refusal = ProtoExpert.new("nnp.refusal", "Data frame refused by the peer's application",
    expert.group.RESPONSE_CODE, expert.severity.NOTE)
local e_error = ProtoExpert.new("nnp.error.expert", "Protocol error reported",
    expert.group.RESPONSE_CODE, expert.severity.WARN)
nnp.experts = { e_checksum, e_malformed, e_refusal, e_error }

-- CRC-32/IEEE, the zlib one, by table.
local crc_table = {}
for i = 0, 255 do
    local c = i
    for _ = 1, 8 do
        if bit.band(c, 1) ~= 0 then
            c = bit.bxor(bit.rshift(c, 1), 0xEDB88320)
        else
            c = bit.rshift(c, 1)
        end
    end
    crc_table[i] = c
end

local function u32(x)
    if x < 0 then
        return x + 4294967296
    end
    return x
end

local function crc32(s)
    local crc = 0xFFFFFFFF
    local byte, band, bxor, rshift = string.byte, bit.band, bit.bxor, bit.rshift
    local n = #s
    local i = 1
    while i <= n do
        local last = math.min(i + 3999, n)
        local chunk = { byte(s, i, last) }
        for k = 1, #chunk do
            crc = bxor(rshift(crc, 8), crc_table[band(bxor(crc, chunk[k]), 0xFF)])
        end
        i = last + 1
    end
    return u32(bxor(crc, 0xFFFFFFFF))
end

local function malformed(tree, range, text)
    tree:add_proto_expert_info(e_malformed, text)
    return false
end

-- An array of f32 (little-endian) from `offset` to the end of `payload`, as `field` items.
local function add_f32s(tree, payload, offset, field, label)
    local bytes = payload:len() - offset
    if bytes % 4 ~= 0 then
        return malformed(tree, payload, label .. ": " .. bytes .. " bytes is not a whole number of f32")
    end
    local count = bytes / 4
    tree:add(f.value_count, count):set_generated()
    local shown = math.min(count, MAX_ARRAY_ITEMS)
    for i = 0, shown - 1 do
        tree:add_le(field, payload(offset + i * 4, 4))
    end
    if count > shown then
        tree:add(payload(offset + shown * 4), string.format("%s: %d more values", label, count - shown))
    end
    return true, count
end

-- Zero padding from `from` to the end of the payload.
local function add_padding(tree, payload, from)
    local left = payload:len() - from
    if left < 0 then
        return malformed(tree, payload, "payload shorter than its fields")
    end
    if left > 3 then
        return malformed(tree, payload, left .. " bytes after the last field (padding is 0 to 3)")
    end
    if left > 0 then
        local item = tree:add(f.padding, payload(from, left))
        for i = 0, left - 1 do
            if payload(from + i, 1):uint() ~= 0 then
                item:add_proto_expert_info(e_malformed, "padding is not zero")
            end
        end
    end
    return true
end

local function need(tree, payload, len, what)
    if payload:len() < len then
        return malformed(tree, payload, what .. " needs " .. len .. " bytes, the payload has " .. payload:len())
    end
    return true
end

local dissect_payload = {}

dissect_payload[0x01] = function(tree, payload, pinfo, info)
    if not need(tree, payload, 22, "Hello") then return end
    local name_len = payload(0, 2):le_uint()
    tree:add_le(f.hello_name_len, payload(0, 2))
    tree:add_le(f.hello_node_id, payload(2, 8))
    local caps_item = tree:add_le(f.hello_capabilities, payload(10, 4))
    for _, field in ipairs(capability_fields) do
        caps_item:add_le(field, payload(10, 4))
    end
    tree:add(f.hello_min_version, payload(14, 1))
    tree:add(f.hello_max_version, payload(15, 1))
    tree:add_le(f.hello_reserved, payload(16, 2))
    local layer_count = payload(18, 4):le_uint()
    tree:add_le(f.hello_layer_count, payload(18, 4))
    local at = 22
    if not need(tree, payload, at + 4 * layer_count + name_len, "Hello with its layers and name") then return end
    local sizes = {}
    for i = 0, layer_count - 1 do
        tree:add_le(f.hello_layer_size, payload(at + 4 * i, 4))
        sizes[#sizes + 1] = tostring(payload(at + 4 * i, 4):le_uint())
    end
    at = at + 4 * layer_count
    local name = ""
    if name_len > 0 then
        tree:add(f.hello_name, payload(at, name_len), payload(at, name_len):string(ENC_UTF_8))
        name = payload(at, name_len):string(ENC_UTF_8)
    end
    add_padding(tree, payload, at + name_len)
    info[#info + 1] = string.format("%q caps=0x%02x layers=[%s]", name, payload(10, 4):le_uint(),
        table.concat(sizes, ","))
end
dissect_payload[0x02] = dissect_payload[0x01]

local function layer_values(layer_field, value_field, label)
    return function(tree, payload, pinfo, info)
        if not need(tree, payload, 2, label) then return end
        tree:add_le(layer_field, payload(0, 2))
        local ok, count = add_f32s(tree, payload, 2, value_field, label)
        if ok then
            info[#info + 1] = string.format("layer=%d values=%d", payload(0, 2):le_uint(), count)
        end
    end
end
dissect_payload[0x10] = layer_values(f.forward_layer_id, f.forward_value, "ForwardData")
dissect_payload[0x11] = layer_values(f.backward_layer_id, f.backward_value, "BackwardData")

dissect_payload[0x12] = function(tree, payload, pinfo, info)
    if not need(tree, payload, 14, "HebbianData") then return end
    tree:add_le(f.hebbian_layer_id, payload(0, 2))
    tree:add_le(f.hebbian_learning_rate, payload(2, 4))
    tree:add_le(f.hebbian_rows, payload(6, 4))
    tree:add_le(f.hebbian_cols, payload(10, 4))
    local rows, cols = payload(6, 4):le_uint(), payload(10, 4):le_uint()
    local ok, count = add_f32s(tree, payload, 14, f.hebbian_correlation, "HebbianData")
    if ok and count ~= rows * cols then
        malformed(tree, payload, string.format("%d correlations for a %d x %d matrix", count, rows, cols))
    end
    info[#info + 1] = string.format("layer=%d %dx%d", payload(0, 2):le_uint(), rows, cols)
end

dissect_payload[0x13] = function(tree, payload, pinfo, info)
    if not need(tree, payload, 22, "WeightSync") then return end
    tree:add_le(f.sync_layer_id, payload(0, 2))
    local enc = tree:add(f.sync_encoding, payload(2, 1))
    if payload(2, 1):uint() ~= 0 then
        enc:add_proto_expert_info(e_malformed, "unknown encoding")
    end
    local mode = tree:add(f.sync_mode, payload(3, 1))
    if payload(3, 1):uint() > 1 then
        mode:add_proto_expert_info(e_malformed, "unknown mode")
    end
    local reserved = tree:add_le(f.sync_reserved, payload(4, 2))
    if payload(4, 2):le_uint() ~= 0 then
        reserved:add_proto_expert_info(e_malformed, "reserved is not zero")
    end
    tree:add_le(f.sync_rows, payload(6, 4))
    tree:add_le(f.sync_cols, payload(10, 4))
    tree:add_le(f.sync_offset, payload(14, 4))
    tree:add_le(f.sync_sample_count, payload(18, 4))
    local ok, count = add_f32s(tree, payload, 22, f.sync_value, "WeightSync")
    local rows, cols, offset = payload(6, 4):le_uint(), payload(10, 4):le_uint(), payload(14, 4):le_uint()
    if ok and offset + count > rows * cols + rows then
        malformed(tree, payload, string.format("values %d..%d past the layer's %d parameters",
            offset, offset + count, rows * cols + rows))
    end
    info[#info + 1] = string.format("layer=%d %dx%d offset=%d values=%d", payload(0, 2):le_uint(),
        rows, cols, offset, count or 0)
end

dissect_payload[0x20] = function(tree, payload, pinfo, info)
    if payload:len() ~= 10 then
        return malformed(tree, payload, "a Heartbeat payload is 10 bytes, not " .. payload:len())
    end
    local flags = tree:add_le(f.heartbeat_flags, payload(0, 2))
    flags:add_le(f.heartbeat_reply, payload(0, 2))
    if bit.band(payload(0, 2):le_uint(), 0xFFFE) ~= 0 then
        flags:add_proto_expert_info(e_malformed, "unknown flag bits")
    end
    tree:add_le(f.heartbeat_timestamp, payload(2, 8))
    if bit.band(payload(0, 2):le_uint(), 1) ~= 0 then
        info[#info + 1] = "reply"
    end
end

local function code_and_text(code_field, len_field, text_field, names, label)
    return function(tree, payload, pinfo, info)
        if not need(tree, payload, 6, label) then return end
        tree:add_le(code_field, payload(0, 2))
        local text_len = payload(2, 4):le_uint()
        tree:add_le(len_field, payload(2, 4))
        if not need(tree, payload, 6 + text_len, label .. " with its text") then return end
        local text = ""
        if text_len > 0 then
            text = payload(6, text_len):string(ENC_UTF_8)
            tree:add(text_field, payload(6, text_len), text)
        end
        add_padding(tree, payload, 6 + text_len)
        local code = payload(0, 2):le_uint()
        info[#info + 1] = string.format("%s %q", names[code] or tostring(code), text)
        return code
    end
end
dissect_payload[0x21] = code_and_text(f.disconnect_reason, f.disconnect_text_len, f.disconnect_text,
    disconnect_reasons, "Disconnect")
local dissect_error = code_and_text(f.error_code, f.error_text_len, f.error_text, error_codes, "Error")
dissect_payload[0xFF] = function(tree, payload, pinfo, info)
    local code = dissect_error(tree, payload, pinfo, info)
    if code == 11 then
        tree:add_proto_expert_info(e_refusal)
    elseif code then
        tree:add_proto_expert_info(e_error)
    end
end

-- The whole length of the frame at `offset`: the header's LENGTH plus the header, or what is
-- left of the segment if the bytes there are not an NNP header (dissected as malformed).
local function frame_len(tvb, pinfo, offset)
    if tvb(offset, 4):string() ~= MAGIC then
        return tvb:len() - offset
    end
    return HEADER_LEN + tvb(offset + 6, 4):uint()
end

-- One whole frame.
local function dissect_frame(tvb, pinfo, root)
    pinfo.cols.protocol = "NNP"
    local len = tvb:len()
    local tree = root:add(nnp, tvb(0, len))
    if len < HEADER_LEN or tvb(0, 4):string() ~= MAGIC then
        tree:add_proto_expert_info(e_malformed, "no NNP header here (bad magic or stream out of step)")
        pinfo.cols.info:append(" [NNP garbage]")
        return len
    end
    tree:add(f.magic, tvb(0, 4))
    local version = tvb(4, 1):uint()
    local vitem = tree:add(f.version, tvb(4, 1))
    if version ~= 1 then
        vitem:add_proto_expert_info(e_malformed, "unsupported version " .. version)
    end
    local msg_type = tvb(5, 1):uint()
    local titem = tree:add(f.type, tvb(5, 1))
    tree:add(f.length, tvb(6, 4))
    tree:add(f.seq, tvb(10, 8))
    local name = msg_types[msg_type]
    if not name then
        titem:add_proto_expert_info(e_malformed, string.format("unknown message type 0x%02x", msg_type))
        name = string.format("Unknown(0x%02x)", msg_type)
    end
    if len % 4 ~= 0 then
        tree:add_proto_expert_info(e_malformed, "frame length " .. len .. " is not a multiple of 4")
    end
    local payload = tvb(HEADER_LEN, len - HEADER_LEN)
    local stated = tvb(18, 4):uint()
    local computed = crc32(tvb:raw(HEADER_LEN, len - HEADER_LEN))
    local citem = tree:add(f.checksum, tvb(18, 4))
    tree:add(f.checksum_computed, computed):set_generated()
    local good = stated == computed
    tree:add(f.checksum_status, good and 1 or 0):set_generated()
    if not good then
        citem:add_proto_expert_info(e_checksum, string.format("Bad checksum: 0x%08x, the payload's is 0x%08x",
            stated, computed))
    end
    tree:append_text(string.format(", %s, seq %s", name, tostring(tvb(10, 8):uint64())))
    local info = { string.format("%s seq=%s", name, tostring(tvb(10, 8):uint64())) }
    local body = dissect_payload[msg_type]
    if body then
        body(tree, payload, pinfo, info)
    end
    if not good then
        info[#info + 1] = "[BAD CHECKSUM]"
    end
    pinfo.cols.info:append(" " .. table.concat(info, " "))
    pinfo.cols.info:fence()
    return len
end

function nnp.dissector(tvb, pinfo, tree)
    pinfo.cols.info:set("")
    dissect_tcp_pdus(tvb, tree, HEADER_LEN, frame_len, dissect_frame, true)
    return tvb:len()
end

-- The heuristic: a segment that starts with NNP's magic and version 1 starts an NNP stream.
local function heuristic(tvb, pinfo, tree)
    if tvb:len() < 6 or tvb(0, 4):string() ~= MAGIC or tvb(4, 1):uint() ~= 1 then
        return false
    end
    if not msg_types[tvb(5, 1):uint()] then
        return false
    end
    -- The rest of the conversation, continuation segments included, goes to NNP.
    pinfo.conversation = nnp
    nnp.dissector(tvb, pinfo, tree)
    return true
end

nnp:register_heuristic("tcp", heuristic)
DissectorTable.get("tcp.port"):add_for_decode_as(nnp)
