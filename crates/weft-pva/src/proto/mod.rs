//! Sans-IO pvAccess core: pvData types and values, message framing and
//! codecs, normative types and pvRequest handling. No sockets, clocks or
//! randomness in here: time and ids come in as arguments.

pub mod flow;
pub mod header;
pub mod msg;
pub mod nt;
pub mod request;
pub mod types;
pub mod value;
pub mod wire;

pub use header::{Frame, FrameDecoder, Header};
pub use msg::{Message, OpRequest, OpResponse, ReqBody, RespBody, Status};
pub use types::{ArrayKind, FieldDesc, Members, ScalarType, SendCache, TypeCache};
pub use value::{BitSet, ScalarArray, UnionValue, Value};
pub use wire::{ByteOrder, Limits, Reader, Writer};
