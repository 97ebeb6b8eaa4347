//! Chat templates: the Jinja template of tokenizer_config.json (or a GGUF's
//! `tokenizer.chat_template`), rendered like transformers' `apply_chat_template`:
//! `trim_blocks` and `lstrip_blocks`, Python string methods, `raise_exception`, `tojson`.
//!
//! A template is code from outside (a downloaded tokenizer_config.json or GGUF), so every
//! render runs on a budget of minijinja fuel ([`fuel_budget`]), which bounds both the
//! instructions it runs and the bytes it allocates: a template that loops or recurses without
//! end, or grows a string without bound, stops with an error naming its file.

use std::path::{Path, PathBuf};

use minijinja::{Environment, Error, ErrorKind, State, Value};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Message { role: role.to_string(), content: content.to_string() }
    }
}

#[derive(Clone, Debug)]
pub struct ChatTemplate {
    source: String,
    origin: PathBuf,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    pub fn new(source: String, origin: &Path, bos_token: Option<String>, eos_token: Option<String>) -> Result<Self> {
        let t = ChatTemplate {
            source,
            origin: origin.to_path_buf(),
            bos_token: bos_token.unwrap_or_default(),
            eos_token: eos_token.unwrap_or_default(),
        };
        // Parse once now so a broken template is reported at load time, naming its file.
        t.environment(None)?;
        Ok(t)
    }

    /// The template of tokenizer_config.json: a string, or a list of named templates (the one
    /// named "default" is used).
    pub fn from_tokenizer_config(
        config: &serde_json::Value,
        origin: &Path,
        bos: Option<String>,
        eos: Option<String>,
    ) -> Result<Option<Self>> {
        let source = match config.get("chat_template") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(list)) => {
                let named = |n: &str| list.iter().find(|t| t.get("name").and_then(|x| x.as_str()) == Some(n));
                match named("default").or_else(|| list.first()).and_then(|t| t.get("template")).and_then(|t| t.as_str()) {
                    Some(s) => s.to_string(),
                    None => return Err(ModelError::tokenizer(origin, "chat_template list has no usable template")),
                }
            }
            _ => return Ok(None),
        };
        Self::new(source, origin, bos, eos).map(Some)
    }

    fn environment(&self, fuel: Option<u64>) -> Result<Environment<'_>> {
        let mut env = Environment::new();
        // transformers renders with jinja2's trim_blocks and lstrip_blocks.
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| ModelError::tokenizer(&self.origin, format!("chat template syntax: {e}")))?;
        env.set_syntax(syntax);
        env.set_fuel(fuel);
        env.set_unknown_method_callback(python_method);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |state: &State, fmt: String| -> std::result::Result<String, Error> {
            // Each directive grows to at most 7 bytes ("January"): paid before it is built.
            state.consume_fuel(fuel_for_bytes(fmt.len().saturating_mul(4)))?;
            // Templates use it for "today's date" lines; a fixed date keeps runs reproducible.
            Ok(fmt.replace("%Y", "2026").replace("%m", "01").replace("%d", "01").replace("%B", "January").replace("%b", "Jan"))
        });
        env.add_template("chat", &self.source)
            .map_err(|e| ModelError::tokenizer(&self.origin, format!("chat template does not parse: {e}")))?;
        Ok(env)
    }

    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let fuel = fuel_budget(messages);
        let env = self.environment(Some(fuel))?;
        let tmpl = env.get_template("chat").map_err(|e| ModelError::tokenizer(&self.origin, format!("chat template: {e}")))?;
        tmpl.render(minijinja::context! {
            messages => minijinja::Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(|e| {
            let message = match e.kind() {
                ErrorKind::OutOfFuel => format!(
                    "chat template used more than its budget: {fuel} fuel for {} messages of {} bytes (it loops, recurses or \
                     grows a string without bound): {e}",
                    messages.len(),
                    message_bytes(messages)
                ),
                _ => format!("chat template failed: {e}"),
            };
            ModelError::tokenizer(&self.origin, message)
        })
    }
}

/// Fuel every render gets whatever it renders. One fuel is one instruction or about 64 bytes
/// allocated, so this bounds a runaway template to about a million steps and 64 MB, a fraction
/// of a second; a short conversation takes real templates a few hundred.
const BASE_FUEL: u64 = 1_000_000;
/// Fuel per message: real templates spend a few dozen per message (role checks, concatenation,
/// reasoning and tool branches); this leaves them twentyfold headroom.
const FUEL_PER_MESSAGE: u64 = 1_000;
/// Fuel per 64 bytes of the messages' text: a template may copy each byte this many times
/// (concatenating a message into the output, trimming, splitting off reasoning, building a
/// prefix); real ones copy it a handful of times.
const FUEL_PER_64_BYTES: u64 = 32;

/// The fuel a render of `messages` may use: [`BASE_FUEL`] plus what grows with the
/// conversation, so long conversations still render while a runaway template stops quickly.
pub fn fuel_budget(messages: &[Message]) -> u64 {
    let per_message = FUEL_PER_MESSAGE.saturating_mul(messages.len() as u64);
    let per_byte = FUEL_PER_64_BYTES.saturating_mul(message_bytes(messages).div_ceil(64));
    BASE_FUEL.saturating_add(per_message).saturating_add(per_byte)
}

fn message_bytes(messages: &[Message]) -> u64 {
    messages.iter().map(|m| (m.role.len() + m.content.len()) as u64).sum()
}

/// Fuel for allocating `bytes` bytes (minijinja counts about 64 bytes per fuel).
fn fuel_for_bytes(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(64)
}

/// Python's string, list and dict methods (minijinja-contrib's `pycompat`), each first paying
/// for the output it may build: minijinja charges a method only for the value it returns, once
/// it is built, so `s.replace('a', s)` or `'{:>999999999}'.format(1)` would otherwise
/// allocate past the budget before it is charged.
fn python_method(state: &mut State, value: &Value, method: &str, args: &[Value]) -> std::result::Result<Value, Error> {
    state.consume_fuel(fuel_for_bytes(method_output_bound(value, method, args)?))?;
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// An upper bound of the bytes `value.method(args)` builds.
fn method_output_bound(value: &Value, method: &str, args: &[Value]) -> std::result::Result<usize, Error> {
    let len = |v: &Value| v.as_str().map_or_else(|| v.to_string().len(), str::len);
    let Some(s) = value.as_str() else {
        // Dict methods (`items`, `keys`, `get`, …) return what the dict already holds.
        return Ok(value.len().unwrap_or(0).saturating_mul(16));
    };
    Ok(match method {
        "replace" => {
            let old = args.first().and_then(Value::as_str).unwrap_or("");
            let new = args.get(1).map_or(0, len);
            // Every match (every position, for an empty pattern) may become `new`.
            let matches = if old.is_empty() { s.chars().count() + 1 } else { s.matches(old).count() };
            s.len().saturating_add(matches.saturating_mul(new))
        }
        "join" => {
            let Some(items) = args.first() else { return Ok(0) };
            let mut total = 0usize;
            for item in items.try_iter()? {
                total = total.saturating_add(s.len()).saturating_add(len(&item));
            }
            total
        }
        "format" => {
            // Widths are decimal literals in the replacement fields; each field may repeat the
            // longest argument.
            let widths = s
                .split(|c: char| !c.is_ascii_digit())
                .filter(|d| !d.is_empty())
                .map(|d| d.parse::<usize>().unwrap_or(usize::MAX))
                .fold(0, usize::saturating_add);
            let fields = s.matches('{').count();
            let longest = args.iter().map(len).max().unwrap_or(0);
            s.len().saturating_add(widths).saturating_add(fields.saturating_mul(longest))
        }
        // Case changes may grow a character to three (`ß` → `SS`, ligatures); the rest return
        // parts of the string, or the list of its parts.
        _ => s.len().saturating_mul(3).saturating_add(64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(source: &str) -> ChatTemplate {
        ChatTemplate::new(source.to_string(), Path::new("x/chat_template.jinja"), Some("<s>".into()), Some("</s>".into())).unwrap()
    }

    /// The error of rendering `source` over a short conversation.
    fn render_error(source: &str) -> String {
        let messages = [Message::new("user", "hi")];
        let err = template(source).render(&messages, true).expect_err("a runaway template must stop with an error").to_string();
        assert!(err.contains("x/chat_template.jinja"), "{err}");
        err
    }

    #[test]
    fn runaway_templates_stop_with_an_error_naming_the_file() {
        let doubling = "{% set ns = namespace(s='a') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}";
        assert!(render_error(doubling).contains("used more than its budget"));
        assert!(render_error("{{ 'a' * 10**12 }}").contains("used more than its budget"));
        let nested = "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}";
        assert!(render_error(nested).contains("used more than its budget"));
        // Recursion ends at minijinja's recursion limit (or the budget, whichever comes first).
        render_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
        render_error("{% macro f(n) %}{{ f(n + 1) ~ f(n + 1) }}{% endmacro %}{{ f(0) }}");
    }

    #[test]
    fn custom_functions_and_python_methods_pay_from_the_same_budget() {
        let dates = "{% for i in range(100000) %}{% for j in range(100000) %}{{ strftime_now('%d %B %Y') }}{% endfor %}{% endfor %}";
        assert!(render_error(dates).contains("used more than its budget"));
        // Each would build gigabytes inside one call, before minijinja could charge the result.
        assert!(render_error("{% set s = 'a' * 100000 %}{{ s.replace('a', s) }}").contains("used more than its budget"));
        assert!(render_error("{% set s = 'a' * 100000 %}{{ s.replace('', s) }}").contains("used more than its budget"));
        assert!(render_error("{{ '{:>999999999999}'.format(1) }}").contains("used more than its budget"));
        assert!(render_error("{% set s = 'a' * 100000 %}{{ s.join(range(100000)) }}").contains("used more than its budget"));
        assert!(render_error("{{ ('{0}' * 10000).format('a' * 100000) }}").contains("used more than its budget"));
        // Within the budget the methods still work.
        let ok = template("{{ 'a-b'.replace('-', '+') }} {{ '{}!'.format('hi') }} {{ ', '.join(['x', 'y']) }} {{ 'Hi'.upper() }}");
        assert_eq!(ok.render(&[], false).unwrap(), "a+b hi! x, y HI");
    }

    /// Templates in the manner of real models' (the constructs they use: namespaces, the system
    /// message pulled out, dates, role checks with `raise_exception`, trimming and splitting).
    const FAMILY_TEMPLATES: &[(&str, &str)] = &[
        (
            "llama3",
            "{{- bos_token }}{%- set ns = namespace(system='') %}{%- if messages[0]['role'] == 'system' %}\
             {%- set ns.system = messages[0]['content'] | trim %}{%- set messages = messages[1:] %}{%- endif %}\
             {{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}{{- 'Cutting Knowledge Date: December 2023\\n' }}\
             {{- 'Today Date: ' + strftime_now('%d %b %Y') + '\\n\\n' }}{{- ns.system + '<|eot_id|>' }}\
             {%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}\
             {%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}",
        ),
        (
            "qwen",
            "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\
             {%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}\
             {%- for message in messages %}{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}\
             {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- elif message.role == 'assistant' %}\
             {%- set content = message.content.split('</think>')[-1].lstrip('\\n') %}{{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}\
             {%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}",
        ),
        (
            "deepseek",
            "{% set ns = namespace(system_prompt='', is_first=true) %}{%- for message in messages %}{%- if message['role'] == 'system' %}\
             {%- if ns.is_first %}{% set ns.system_prompt = message['content'] %}{% set ns.is_first = false %}\
             {%- else %}{% set ns.system_prompt = ns.system_prompt + '\\n\\n' + message['content'] %}{%- endif %}{%- endif %}{%- endfor %}\
             {{ bos_token }}{{ ns.system_prompt }}{%- for message in messages %}{%- if message['role'] == 'user' %}\
             {{ '<｜User｜>' + message['content'] }}{%- elif message['role'] == 'assistant' %}\
             {% set content = message['content'] %}{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}\
             {{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}{%- endif %}{%- endfor %}\
             {% if add_generation_prompt %}{{ '<｜Assistant｜>' }}{% endif %}",
        ),
        (
            "mixtral",
            "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}{%- set loop_messages = messages[1:] %}\
             {%- else %}{%- set loop_messages = messages %}{%- endif %}{{- bos_token }}{%- for message in loop_messages %}\
             {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\
             {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\
             {%- endif %}{%- if message['role'] == 'user' %}{%- if loop.first and system_message is defined %}\
             {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}{%- else %}{{- ' [INST] ' + message['content'] + ' [/INST]' }}\
             {%- endif %}{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token}}{%- endif %}{%- endfor %}",
        ),
        (
            "phi3",
            "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}\
             {{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}\
             {% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}\
             {% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}",
        ),
        (
            "smollm2",
            "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}\
             {{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}\
             {{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}\
             {% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
        ),
    ];

    /// A system message, then `turns` user/assistant pairs of `words` words each.
    fn conversation(turns: usize, words: usize) -> Vec<Message> {
        let text = |i: usize| (0..words).map(|w| format!("word{}", (i * 31 + w) % 997)).collect::<Vec<_>>().join(" ");
        let mut m = vec![Message::new("system", "You are a careful assistant. Answer briefly.")];
        for i in 0..turns {
            m.push(Message::new("user", &text(2 * i)));
            m.push(Message::new("assistant", &format!("<think>{}</think>\n{}", text(2 * i + 1), text(2 * i + 2))));
        }
        m.push(Message::new("user", "And finally?"));
        m
    }

    #[test]
    fn long_real_conversations_render_within_their_budget() {
        // Many short turns, a few huge ones, and a single enormous message.
        let cases = [conversation(2_000, 12), conversation(20, 20_000), vec![Message::new("user", &"token ".repeat(2_000_000))]];
        for (name, source) in FAMILY_TEMPLATES {
            let t = template(source);
            for messages in &cases {
                let out = t.render(messages, true).unwrap_or_else(|e| panic!("{name}: {e}"));
                let last = &messages.last().unwrap().content;
                assert!(out.len() >= last.len() && out.contains(&last[..last.len().min(100)]), "{name}");
            }
        }
    }
}
