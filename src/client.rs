//! A blocking client for the control socket.
pub struct Client;
