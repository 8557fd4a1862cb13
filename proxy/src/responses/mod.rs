//! OpenAI's Responses API (what Codex and the Agents SDK speak) as a front end of the one
//! request path: a `/v1/responses` request is translated into the canonical chat request
//! ([`request::to_chat`]), answered by the same plan, key admission, attempts and budget
//! guard as chat completions, and rendered back as a `response` object
//! ([`response::whole`]) or its event stream ([`stream::events`]). Conversations continued
//! by `previous_response_id` come from the bounded [`store::Store`]. No IO.

pub mod request;
pub mod response;
pub mod store;
pub mod stream;

pub use request::{to_chat, Parsed};
pub use store::Store;
