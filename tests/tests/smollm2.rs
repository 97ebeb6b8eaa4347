//! SmolLM2-135M-Instruct (a real pretrained Llama, Q4_1 GGUF) against transformers run on the
//! same dequantised weights (tests/fixtures/smollm2/reference.json, written by
//! tests/fixtures/smollm2/generate_reference.py).

use std::sync::OnceLock;

use routelab_model::capture::CaptureSpec;
use routelab_model::chat::Message;
use routelab_model::hooks::Quantity;
use routelab_model::interventions::Interventions;
use routelab_model::sampling::SamplingSettings;
use routelab_model::session::{LoadOptions, Prompt, RunRequest, Session};
use routelab_model::source::ModelSource;
use routelab_tests::*;

fn session() -> &'static Session {
    static S: OnceLock<Session> = OnceLock::new();
    S.get_or_init(|| Session::load(&ModelSource::Gguf(smollm2_gguf()), &LoadOptions::default(), &mut |_| {}).unwrap())
}

fn reference() -> serde_json::Value {
    json(&fixtures().join("smollm2/reference.json"))
}

fn greedy(s: &Session, tokens: Vec<u32>, n: usize, stop_at_eos: bool, capture: CaptureSpec) -> routelab_model::session::RunRecord {
    let req = RunRequest {
        tokens,
        max_new_tokens: n,
        sampling: SamplingSettings::default(),
        capture,
        interventions: Interventions::default(),
        stop_at_eos,
        replay: None,
    };
    s.run(&req, &mut |_| true).unwrap()
}

#[test]
fn gguf_config_and_tokenizer_match_transformers() {
    let s = session();
    let c = s.config();
    assert_eq!((c.num_layers, c.hidden_size, c.attention.num_heads, c.attention.num_kv_heads), (30, 576, 9, 3));
    assert!(c.tie_word_embeddings);
    let r = reference();
    for case in r["tokenizer_cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(s.tokenizer.encode(text, false).unwrap(), ids_of(&case["ids"]), "{text:?}");
        assert_eq!(s.tokenizer.encode(text, true).unwrap(), ids_of(&case["ids_add_special_tokens"]), "{text:?}");
        let ids = ids_of(&case["ids"]);
        assert_eq!(s.tokenizer.decode(&ids, false).unwrap(), case["decode"].as_str().unwrap(), "{text:?}");
    }
    for key in ["chat", "chat_with_system"] {
        let msgs: Vec<Message> = r[key]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let rendered = s.chat_template.as_ref().unwrap().render(&msgs, true).unwrap();
        assert_eq!(rendered, r[key]["rendered"].as_str().unwrap());
        assert_eq!(s.encode(&Prompt::Chat { messages: msgs }).unwrap(), ids_of(&r[key]["ids"]), "{key}");
    }
}

#[test]
fn prompt_logits_match_transformers() {
    let s = session();
    let r = reference();
    for key in ["chat", "plain"] {
        let ids = ids_of(&r[key]["ids"]);
        let rec = greedy(s, ids, 0, true, CaptureSpec::items(&["logits"]));
        let last = *rec.logits().last().unwrap();
        let mut worst = 0f32;
        for pair in r[key]["prompt_forward"]["logits_top"].as_array().unwrap() {
            let (id, want) = (pair[0].as_u64().unwrap() as usize, pair[1].as_f64().unwrap() as f32);
            worst = worst.max((last[id] - want).abs());
        }
        // Same dequantised weights in f32; the differences are summation order only.
        assert!(worst < 2e-3, "{key}: top-50 logits differ by up to {worst}");
    }
}

#[test]
fn greedy_chat_continuation_matches_transformers_and_reads_as_english() {
    let s = session();
    let r = reference();
    let prompt = ids_of(&r["chat"]["ids"]);
    let want = ids_of(&r["chat"]["greedy_ignore_eos"]["new_ids"]);
    let rec = greedy(s, prompt.clone(), want.len(), false, CaptureSpec::default());
    let got = rec.generated().to_vec();
    let agree = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
    eprintln!("SmolLM2 greedy chat: {agree} of {} tokens identical to transformers", want.len());
    assert!(agree >= 20, "only {agree} tokens agree before divergence: got {got:?}, want {want:?}");

    let rec = greedy(s, prompt, 40, true, CaptureSpec::default());
    assert_eq!(rec.generated(), &ids_of(&r["chat"]["greedy"]["new_ids"])[..]);
    assert_eq!(rec.text, "The capital of France is Paris.<|im_end|>");
    // Every position carries head statistics for every layer.
    let entropy = |l| rec.store.layer_f32(l, Quantity::AttnEntropy).map(|e| e.len());
    assert!(rec.store.num_layers() == 30 && (0..30).all(|l| entropy(l) == Some(9 * rec.store.len())));
}

#[test]
fn greedy_plain_continuation_matches_transformers() {
    let s = session();
    let r = reference();
    let ids = s.encode(&Prompt::text(r["plain"]["text"].as_str().unwrap())).unwrap();
    assert_eq!(ids, ids_of(&r["plain"]["ids"]));
    let want = ids_of(&r["plain"]["greedy"]["new_ids"]);
    let rec = greedy(s, ids, want.len(), true, CaptureSpec::none());
    assert_eq!(rec.generated(), &want[..], "text: {:?}", rec.text);
}
