//! What the proxy and its simulator both put on the wire: the boxed response body (so an
//! in-process answer and one read from a socket are the same type) and OpenAI's error shape.

pub mod body;
pub mod error;

pub use error::ApiError;
