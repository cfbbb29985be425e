//! RPC: methods, signatures, JSON-RPC 2.0 and MessagePack-RPC.
