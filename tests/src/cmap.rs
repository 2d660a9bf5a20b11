//! Corosync's `cmap` service, as its IPC carries it (corosync 3.1's
//! `include/corosync/ipc_cmap.h`): the messages a client sends to read
//! the configuration map, and what the daemon answers, for a ringlink
//! client calling the real daemon and for a ringlink server that
//! `corosync-cmapctl` calls (`tests/cluster_daemon.rs`). Payloads here
//! exclude libqb's headers (ringlink adds them); every field is 8-aligned
//! as corosync's structs are.

/// Request and response ids.
pub mod id {
    /// Read a key.
    pub const GET: i32 = 2;
    /// Start iterating keys under a prefix.
    pub const ITER_INIT: i32 = 4;
    /// The next key of an iteration.
    pub const ITER_NEXT: i32 = 5;
    /// End an iteration.
    pub const ITER_FINALIZE: i32 = 6;
    /// Choose the map (the default or the statistics): what
    /// `corosync-cmapctl` sends first.
    pub const SET_CURRENT_MAP: i32 = 9;
}

/// `cs_error_t` values.
pub mod cs {
    /// Success.
    pub const OK: i32 = 1;
    /// A parameter is wrong.
    pub const INVALID_PARAM: i32 = 7;
    /// No such key.
    pub const NOT_EXIST: i32 = 12;
    /// An iteration has no more keys.
    pub const NO_SECTIONS: i32 = 27;
}

/// `CS_MAX_NAME_LENGTH`.
pub const MAX_NAME: usize = 256;
/// A `mar_name_t`: a length (u16, padded to 8) and 256 bytes.
pub const NAME_LEN: usize = 8 + MAX_NAME;

/// A value of the map.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `CMAP_VALUETYPE_UINT8`.
    U8(u8),
    /// `CMAP_VALUETYPE_UINT16`.
    U16(u16),
    /// `CMAP_VALUETYPE_INT32`.
    I32(i32),
    /// `CMAP_VALUETYPE_UINT32`.
    U32(u32),
    /// `CMAP_VALUETYPE_UINT64`.
    U64(u64),
    /// `CMAP_VALUETYPE_STRING` (stored with its NUL).
    Str(String),
    /// Another type, as its code and bytes.
    Other(u8, Vec<u8>),
}

impl Value {
    /// The type code.
    pub fn code(&self) -> u8 {
        match self {
            Value::U8(_) => 2,
            Value::U16(_) => 4,
            Value::I32(_) => 5,
            Value::U32(_) => 6,
            Value::U64(_) => 8,
            Value::Str(_) => 11,
            Value::Other(t, _) => *t,
        }
    }

    /// The stored bytes.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Value::U8(v) => vec![*v],
            Value::U16(v) => v.to_le_bytes().to_vec(),
            Value::I32(v) => v.to_le_bytes().to_vec(),
            Value::U32(v) => v.to_le_bytes().to_vec(),
            Value::U64(v) => v.to_le_bytes().to_vec(),
            Value::Str(s) => {
                let mut b = s.as_bytes().to_vec();
                b.push(0);
                b
            }
            Value::Other(_, b) => b.clone(),
        }
    }

    /// A value from its type code and bytes.
    pub fn from_parts(code: u8, b: &[u8]) -> Value {
        let n = |k: usize| b.get(..k).map(<[u8]>::to_vec);
        match (code, b.len()) {
            (2, 1) => Value::U8(b[0]),
            (4, 2) => Value::U16(u16::from_le_bytes(n(2).unwrap().try_into().unwrap())),
            (5, 4) => Value::I32(i32::from_le_bytes(n(4).unwrap().try_into().unwrap())),
            (6, 4) => Value::U32(u32::from_le_bytes(n(4).unwrap().try_into().unwrap())),
            (8, 8) => Value::U64(u64::from_le_bytes(n(8).unwrap().try_into().unwrap())),
            (11, _) => {
                let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                Value::Str(String::from_utf8_lossy(&b[..end]).into_owned())
            }
            _ => Value::Other(code, b.to_vec()),
        }
    }

    /// As `corosync-cmapctl` prints it: `(TYPE) = VALUE`.
    pub fn show(&self) -> String {
        match self {
            Value::U8(v) => format!("(u8) = {v}"),
            Value::U16(v) => format!("(u16) = {v}"),
            Value::I32(v) => format!("(i32) = {v}"),
            Value::U32(v) => format!("(u32) = {v}"),
            Value::U64(v) => format!("(u64) = {v}"),
            Value::Str(s) => format!("(str) = {s}"),
            Value::Other(t, b) => format!("(type {t}) = {b:?}"),
        }
    }
}

fn name(b: &mut Vec<u8>, key: &str) {
    let k = key.as_bytes();
    let mut field = [0u8; NAME_LEN];
    field[..2].copy_from_slice(&(k.len().min(MAX_NAME) as u16).to_le_bytes());
    field[8..8 + k.len().min(MAX_NAME)].copy_from_slice(&k[..k.len().min(MAX_NAME)]);
    b.extend_from_slice(&field);
}

fn read_name(b: &[u8]) -> Option<String> {
    let len = u16::from_le_bytes(b.get(..2)?.try_into().ok()?) as usize;
    let v = b.get(8..8 + len.min(MAX_NAME))?;
    Some(String::from_utf8_lossy(v).into_owned())
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A `GET` request's payload for `key`, offering a buffer of `value_len`
/// bytes (0: only the length and type are wanted).
pub fn get_request(key: &str, value_len: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(NAME_LEN + 8);
    name(&mut b, key);
    b.extend_from_slice(&value_len.to_le_bytes());
    b
}

/// A `GET` response's payload: the value's length, type and bytes.
pub fn get_response(value: Option<&Value>, offered: u64) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    if let Some(v) = value {
        let bytes = v.bytes();
        b[..8].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        b[8] = v.code();
        let mut body = vec![0u8; offered as usize];
        let n = bytes.len().min(body.len());
        body[..n].copy_from_slice(&bytes[..n]);
        b.extend_from_slice(&body);
    }
    b
}

/// Reads a `GET` response's payload.
pub fn read_get_response(p: &[u8]) -> Option<Value> {
    let len = u64_at(p, 0)? as usize;
    let code = *p.get(8)?;
    Some(Value::from_parts(code, p.get(16..16 + len)?))
}

/// Reads a `GET` request's payload: the key and the offered length.
pub fn read_get_request(p: &[u8]) -> Option<(String, u64)> {
    Some((read_name(p)?, u64_at(p, NAME_LEN)?))
}

/// An `ITER_INIT` request's payload.
pub fn iter_init_request(prefix: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(NAME_LEN);
    name(&mut b, prefix);
    b
}

/// Reads an `ITER_INIT` request: the prefix.
pub fn read_iter_init_request(p: &[u8]) -> Option<String> {
    read_name(p)
}

/// An iteration handle's payload (`ITER_INIT` response, `ITER_NEXT` and
/// `ITER_FINALIZE` requests).
pub fn handle(h: u64) -> Vec<u8> {
    h.to_le_bytes().to_vec()
}

/// Reads an iteration handle.
pub fn read_handle(p: &[u8]) -> Option<u64> {
    u64_at(p, 0)
}

/// An `ITER_NEXT` response's payload: the key, the value's length and
/// type.
pub fn iter_next_response(key: &str, value: &Value) -> Vec<u8> {
    let mut b = Vec::with_capacity(NAME_LEN + 16);
    name(&mut b, key);
    b.extend_from_slice(&(value.bytes().len() as u64).to_le_bytes());
    b.extend_from_slice(&[value.code(), 0, 0, 0, 0, 0, 0, 0]);
    b
}

/// Reads an `ITER_NEXT` response: the key, the value's length and type.
pub fn read_iter_next_response(p: &[u8]) -> Option<(String, u64, u8)> {
    Some((read_name(p)?, u64_at(p, NAME_LEN)?, *p.get(NAME_LEN + 8)?))
}
