//! Arguments several subcommands share: model and device, capture, interventions.

use std::io::Write;

use anyhow::{bail, Context};
use clap::Args;
use routelab_model::capture::{CaptureSpec, Layers};
use routelab_model::interventions::{parse_expert_mask, parse_head_mask, Interventions};
use routelab_model::session::{parse_device, LoadOptions, Session};
use routelab_model::source::{LoadProgress, ModelSource};

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A model directory (Hugging Face layout), a .gguf file, a Hugging Face repo id
    /// (owner/name[@revision]) or a bundled model name.
    #[arg(long, short)]
    pub model: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl ModelArgs {
    /// Loads the model, showing progress on stderr.
    pub fn load(&self) -> anyhow::Result<Session> {
        let source = ModelSource::parse(&self.model)?;
        let device = parse_device(&self.device)?;
        let dtype = if device.is_cuda() { candle_core::DType::BF16 } else { candle_core::DType::F32 };
        let started = std::time::Instant::now();
        let mut last = String::new();
        let session = Session::load(&source, &LoadOptions { device, dtype }, &mut |p| {
            let line = match p {
                LoadProgress::Download { file, done, total } => {
                    format!("downloading {file}: {:.1}/{:.1} MB", done as f64 / 1e6, total as f64 / 1e6)
                }
                LoadProgress::Layers { done, total } => format!("loading {}: layer {done}/{total}", source.display_name()),
            };
            if line != last {
                eprint!("\r{line:<70}");
                let _ = std::io::stderr().flush();
                last = line;
            }
        })
        .with_context(|| format!("loading model {}", self.model))?;
        eprintln!("\r{:<70}\rloaded {} in {:.1}s: {}", "", session.name, started.elapsed().as_secs_f64(), session.config().summary());
        Ok(session)
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct InterventionArgs {
    /// Mask an expert: LAYER:EXPERT[:reroute|drop] (repeatable).
    #[arg(long = "mask-expert", value_name = "L:E[:METHOD]")]
    pub mask_expert: Vec<String>,
    /// Mask an attention head: LAYER:HEAD[:zero|uniform|mean|scale=X] (repeatable).
    #[arg(long = "mask-head", value_name = "L:H[:METHOD]")]
    pub mask_head: Vec<String>,
    /// Mute a layer's shared expert(s) (repeatable).
    #[arg(long = "mute-shared", value_name = "LAYER")]
    pub mute_shared: Vec<usize>,
    /// Mute a layer's dense residual MLP (Arctic) (repeatable).
    #[arg(long = "mute-dense", value_name = "LAYER")]
    pub mute_dense: Vec<usize>,
}

impl InterventionArgs {
    /// The set; `mean` heads get their reference from a plain run over `reference_tokens`.
    pub fn build(&self, session: &Session, reference_tokens: &[u32]) -> anyhow::Result<Interventions> {
        let mut set = Interventions::default();
        for s in &self.mask_expert {
            set.push(parse_expert_mask(s).map_err(anyhow::Error::msg)?);
        }
        for s in &self.mask_head {
            set.push(parse_head_mask(s).map_err(anyhow::Error::msg)?);
        }
        for &layer in &self.mute_shared {
            set.push(routelab_model::interventions::Intervention::SharedExpert { layer });
        }
        for &layer in &self.mute_dense {
            set.push(routelab_model::interventions::Intervention::DenseResidual { layer });
        }
        set.validate(session.config())?;
        session.fill_head_means(&mut set, reference_tokens)?;
        Ok(set)
    }
}

#[derive(Args, Debug, Clone)]
pub struct CaptureArgs {
    /// What to record: default (routing, head statistics, contribution norms), all (also full
    /// attention, residual streams, logits), none, or items router, stats, probs[:LAYERS],
    /// hidden[:LAYERS], logits, contributions (comma-separated or repeated; LAYERS like 3, 0-5 or 1+4).
    #[arg(long, value_name = "WHAT")]
    pub capture: Vec<String>,
}

fn parse_layers(spec: Option<&str>) -> anyhow::Result<Layers> {
    match spec {
        None | Some("all") => Ok(Layers::All),
        Some(s) => {
            let mut v = vec![];
            for part in s.split('+') {
                match part.split_once('-') {
                    Some((a, b)) => {
                        let (a, b): (usize, usize) = (a.parse().context("layer range")?, b.parse().context("layer range")?);
                        v.extend(a..=b);
                    }
                    None => v.push(part.parse().with_context(|| format!("layer {part:?}"))?),
                }
            }
            Ok(Layers::Only(v))
        }
    }
}

impl CaptureArgs {
    pub fn spec(&self, default: CaptureSpec) -> anyhow::Result<CaptureSpec> {
        if self.capture.is_empty() {
            return Ok(default);
        }
        let mut spec = CaptureSpec::none();
        for item in self.capture.iter().flat_map(|c| c.split(',')) {
            let (name, layers) = match item.split_once(':') {
                Some((n, l)) => (n, Some(l)),
                None => (item, None),
            };
            match name {
                "default" => spec = CaptureSpec::default(),
                "all" => spec = CaptureSpec::all(),
                "none" => {}
                "router" => spec.router = true,
                "stats" => spec.attention_stats = true,
                "probs" => spec.attention_probs = parse_layers(layers)?,
                "hidden" => spec.hidden = parse_layers(layers)?,
                "logits" => spec.logits = true,
                "contributions" => spec.contributions = true,
                other => bail!("--capture {other:?}: expected default, all, none, router, stats, probs[:LAYERS], hidden[:LAYERS], logits, contributions"),
            }
        }
        Ok(spec)
    }
}
