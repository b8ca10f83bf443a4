//! The Discord adapter (serenity): gateway or HTTP interactions, embeds and components, and
//! the `/db` command registration.

pub mod http;
pub mod register;
pub mod render;
