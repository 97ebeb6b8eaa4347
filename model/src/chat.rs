//! Chat templates: the Jinja template of tokenizer_config.json (or a GGUF's
//! `tokenizer.chat_template`), rendered like transformers' `apply_chat_template`:
//! `trim_blocks` and `lstrip_blocks`, Python string methods, `raise_exception`, `tojson`.

use std::path::{Path, PathBuf};

use minijinja::{Environment, Error, ErrorKind};
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
        t.environment()?;
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

    fn environment(&self) -> Result<Environment<'_>> {
        let mut env = Environment::new();
        // transformers renders with jinja2's trim_blocks and lstrip_blocks.
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| ModelError::tokenizer(&self.origin, format!("chat template syntax: {e}")))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |fmt: String| -> String {
            // Templates use it for "today's date" lines; a fixed date keeps runs reproducible.
            fmt.replace("%Y", "2026").replace("%m", "01").replace("%d", "01").replace("%B", "January").replace("%b", "Jan")
        });
        env.add_template("chat", &self.source)
            .map_err(|e| ModelError::tokenizer(&self.origin, format!("chat template does not parse: {e}")))?;
        Ok(env)
    }

    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let env = self.environment()?;
        let tmpl = env.get_template("chat").map_err(|e| ModelError::tokenizer(&self.origin, format!("chat template: {e}")))?;
        tmpl.render(minijinja::context! {
            messages => minijinja::Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(|e| ModelError::tokenizer(&self.origin, format!("chat template failed: {e}")))
    }
}
