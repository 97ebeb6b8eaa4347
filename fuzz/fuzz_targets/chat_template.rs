//! A chat template's source (the fuzz input, as chat_template.jinja or a GGUF's
//! `tokenizer.chat_template` holds it): `ChatTemplate::new` parses it and `render` renders a
//! short conversation. A template that loops or recurses without end must stop with an error
//! (its fuel budget), never hang or exhaust memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use routelab_fuzz::{conversation, scratch};
use routelab_model::chat::ChatTemplate;

fuzz_target!(|data: &[u8]| {
    // Templates are read as UTF-8 text; other bytes never reach the parser.
    let Ok(source) = std::str::from_utf8(data) else { return };
    let origin = scratch().join("chat_template.jinja");
    let Ok(t) = ChatTemplate::new(source.to_string(), &origin, Some("<s>".into()), Some("</s>".into())) else { return };
    let _ = t.render(&conversation(), true);
});
