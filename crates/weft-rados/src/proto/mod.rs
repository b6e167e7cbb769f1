//! Sans-IO protocol core: encodings, maps, CRUSH, msgr2 frames and the
//! connection state machine, CephX, messages. No sockets, clocks or
//! randomness in here: time and random values come in as arguments.

pub mod crush;
pub mod enc;
pub mod monmap;
pub mod osdmap;
pub mod types;
pub mod cephx;
pub mod compress;
pub mod conn;
pub mod frame;
pub mod msg;
