//! Messages for the user: a sentence that says what happened, what still works and what to do
//! next, and the internal detail (error chains, URLs, wgpu's own words) behind a collapsed
//! "Details" disclosure, there for a bug report but out of the way.
//!
//! The views' error signals carry a `String`; a message with detail is the sentence and the
//! detail joined by [`SEPARATOR`] ([`with_details`]), and [`Message`] renders either kind.

use leptos::prelude::*;

/// Joins a message's sentence to its detail (ASCII's unit separator: never in an error text).
const SEPARATOR: char = '\u{1f}';

/// A message whose `detail` goes behind "Details".
pub fn with_details(text: &str, detail: &str) -> String {
    format!("{text}{SEPARATOR}{detail}")
}

/// A message's sentence and its detail, if it has one.
pub fn split(message: &str) -> (&str, Option<&str>) {
    match message.split_once(SEPARATOR) {
        Some((text, detail)) => (text, Some(detail)),
        None => (message, None),
    }
}

/// A message's sentence, then its detail in a collapsed `<details>`.
#[component]
pub fn Message(
    /// The message, plain or made by [`with_details`].
    text: String,
    /// Said after the sentence (what still works, where that can change while it shows).
    #[prop(optional, into)]
    tail: Signal<String>,
) -> impl IntoView {
    let (sentence, detail) = split(&text);
    let sentence = sentence.to_string();
    let detail = detail.map(|d| view! { <Details text=d.to_string() /> });
    view! {
        <span class="message">{sentence}{move || tail.get()}</span>
        {detail}
    }
}

/// Technical detail, collapsed under "Details".
#[component]
pub fn Details(
    /// What the disclosure holds (kept as written: line breaks and all).
    text: String,
) -> impl IntoView {
    view! {
        <details class="more">
            <summary>"Details"</summary>
            <pre>{text}</pre>
        </details>
    }
}
