//! Anthropic's Messages API as a front end of the one request path: a `/v1/messages`
//! request is translated into the canonical chat request ([`request::to_chat`]), answered
//! by the same plan, key admission, attempts and budget guard as chat completions, and the
//! answer rendered back — whole ([`response::message`]), streamed ([`stream::events`]), or
//! as Anthropic's error shape ([`response::error_body`]). This module does no IO.

pub mod request;
pub mod response;
pub mod stream;

pub use request::to_chat;
