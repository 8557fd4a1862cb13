//! The domain classifier: the held-out set, the older evaluation set and cross-validation
//! (macro accuracy, confusion, calibration), the tricky cases by name, and the `classify`
//! and `route --explain` commands.

use serde_json::{json, Value};
use thinkgate_proxy::ingress::parse_chat;
use thinkgate_proxy::plan::classify::evaluate::{Evaluation, LabeledRow};
use thinkgate_proxy::plan::classify::Classifier;

/// Regression floors, a few points under the figures last measured (not targets tuned on).
const HOLDOUT_FLOOR: f64 = 0.88;
const EVAL_FLOOR: f64 = 0.90;
const CV_FLOOR: f64 = 0.85;

use crate::support::*;

fn classifier() -> Classifier {
    let cfg = parse_config(&config_text(None, ""));
    Classifier::train(&cfg.domains, cfg.confidence_threshold)
}

fn rows(text: &str) -> Vec<LabeledRow> {
    LabeledRow::parse_lines(text).unwrap()
}

/// The words of a text, lowercased, punctuation dropped.
fn word_set(text: &str) -> std::collections::HashSet<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// No training example is a request of the evaluation sets, or one in other words: an
/// example sharing 60 % of its words with a row would let that row be learnt by heart.
#[test]
fn the_training_examples_hold_nothing_of_the_evaluation_sets() {
    let cfg = parse_config(&config_text(None, ""));
    let mut held: Vec<std::collections::HashSet<String>> = Vec::new();
    for text in [
        include_str!("../classifier/holdout.jsonl"),
        include_str!("../classifier/eval.jsonl"),
    ] {
        held.extend(rows(text).iter().map(|r| word_set(&r.text)));
    }
    let mut close = Vec::new();
    for domain in &cfg.domains {
        for example in &domain.examples {
            let words = word_set(example);
            let overlap = |row: &std::collections::HashSet<String>| {
                let union = words.union(row).count().max(1);
                words.intersection(row).count() as f64 / union as f64
            };
            if !words.is_empty() && held.iter().any(|row| overlap(row) >= 0.6) {
                close.push(example.clone());
            }
        }
    }
    assert!(
        close.is_empty(),
        "examples too close to evaluation rows: {close:#?}"
    );
}

/// The held-out set (tests/classifier/holdout.jsonl): written apart from the training
/// examples, in other voices (terse, typos, pasted code and logs, multi-turn), a quarter of
/// it not in English, and never tuned on. The floor is a regression guard below the figure
/// measured when the classifier was last changed (see the README's classifier section).
#[test]
fn the_held_out_set_is_classified_as_measured() {
    let rows = rows(include_str!("../classifier/holdout.jsonl"));
    assert!(rows.len() >= 600);
    let other = rows.iter().filter(|r| r.lang != "en").count();
    assert!(
        other * 5 >= rows.len(),
        "{other} of {} not in English",
        rows.len()
    );
    assert!(rows.iter().filter(|r| !r.turns.is_empty()).count() >= 20);
    let eval = Evaluation::run(&classifier(), &rows);
    eprintln!("{eval}");
    assert!(eval.errors.is_empty(), "{:?}", eval.errors);
    let text = eval.text_macro_accuracy().unwrap();
    assert!(
        text >= HOLDOUT_FLOOR,
        "text macro accuracy {text:.3}\n{eval}"
    );
    assert_eq!(eval.structural_macro_accuracy(), Some(1.0), "{eval}");
}

/// The older evaluation set (tests/classifier/eval.jsonl), closer in voice to the examples.
#[test]
fn the_older_evaluation_set_stays_above_its_floor() {
    let eval = Evaluation::run(
        &classifier(),
        &rows(include_str!("../classifier/eval.jsonl")),
    );
    eprintln!("{eval}");
    let text = eval.text_macro_accuracy().unwrap();
    assert!(text >= EVAL_FLOOR, "text macro accuracy {text:.3}\n{eval}");
}

/// 5-fold cross-validation on the built-in examples: the only figure constants are tuned on.
#[test]
fn cross_validation_on_the_built_in_examples() {
    let cfg = parse_config(&config_text(None, ""));
    let eval = Evaluation::cross_validate(&cfg.domains, cfg.confidence_threshold, 5);
    eprintln!("{eval}");
    assert!(eval.rows() >= 500);
    let text = eval.text_macro_accuracy().unwrap();
    assert!(
        text >= CV_FLOOR,
        "cross-validated macro accuracy {text:.3}\n{eval}"
    );
}

#[test]
fn classify_cli_evaluates_labelled_rows_and_cross_validates() {
    let dir = std::env::temp_dir().join(format!("thinkgate-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rows.jsonl");
    std::fs::write(
        &file,
        concat!(
            r#"{"domain":"coding","text":"kill the process on port 8080 mac"}"#,
            "\n",
            r#"{"domain":"vision","text":"what is this","image":true,"lang":"en"}"#,
            "\n",
            r#"{"domain":"health","text":"and at night?","turns":["my blood pressure is 150/95"]}"#,
            "\n"
        ),
    )
    .unwrap();
    let (code, out, err) = run_cli(&["classify", "--eval", file.to_str().unwrap()], "");
    assert_eq!(code, 0, "{err}");
    for part in [
        "macro accuracy, text rows",
        "(2 rows",
        "structural rows: 100.0 %",
        "confusion",
        "calibration",
    ] {
        assert!(out.contains(part), "{part}\n{out}");
    }
    std::fs::write(&file, "{\"text\": \"no label\"}\n").unwrap();
    let (code, _, err) = run_cli(&["classify", "--eval", file.to_str().unwrap()], "");
    assert_eq!(code, 2);
    assert!(err.contains("line 1: no \"domain\" string"), "{err}");
    let (code, out, err) = run_cli(&["classify", "--cross-validate", "3"], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("macro accuracy, text rows"), "{out}");
}

#[test]
fn tricky_cases_go_where_a_person_would_send_them() {
    let c = classifier();
    let classify = |body: Value| c.classify(&parse_chat(body.to_string().as_bytes()).unwrap());
    let user =
        |text: &str| json!({"model": "auto", "messages": [{"role": "user", "content": text}]});
    let cases = [
        ("My son is 25 kg; is 250 mg of amoxicillin three times a day the right dose?", "health"),
        ("A test for a disease is 98% sensitive and 95% specific and 2% of people have it. What is the probability that a person who tests positive is sick?", "math"),
        ("Write a Python function that computes the probability of two dice summing to 7.", "coding"),
        ("Which blender should I buy for smoothies under 100 euros?", "shopping"),
        ("Hola, ¿cómo estás? Cuéntame un chiste.", "general"),
    ];
    for (text, want) in cases {
        let d = classify(user(text));
        assert_eq!(d.domain, want, "{text}: {:?}", d.scores);
        assert!(d.confidence > 0.0 && d.confidence <= 1.0);
    }
    // An image decides whatever the text says; tools make it agentic.
    let image = json!({"model": "auto", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Solve the integral of x^2 dx"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]});
    let d = classify(image);
    assert_eq!(
        (d.domain.as_str(), d.by, d.confidence),
        ("vision", "image", 1.0)
    );
    let mut tools = user("What is the weather in Paris?");
    tools["tools"] = json!([{"type": "function", "function": {"name": "weather"}}]);
    assert_eq!(classify(tools).domain, "agentic");
    // Earlier turns are context: a follow-up with no topic of its own keeps the thread's.
    let thread = json!({"model": "auto", "messages": [
        {"role": "user", "content": "My blood pressure is 150/95 and I take lisinopril 10 mg."},
        {"role": "assistant", "content": "That is high; talk to your doctor."},
        {"role": "user", "content": "and what about at night?"}]});
    assert_eq!(classify(thread).domain, "health");
    // Gibberish, empty text and scripts the examples never saw do not break it.
    for text in ["", "zxqv blorp", "これは何ですか", "🙂🙂🙂"] {
        let d = classify(user(text));
        assert!(c.domains().contains(&d.domain), "{text}");
    }
}

#[test]
fn under_the_threshold_a_request_goes_to_general() {
    let mut cfg = parse_config(&config_text(None, ""));
    cfg.confidence_threshold = 0.999;
    let c = Classifier::train(&cfg.domains, cfg.confidence_threshold);
    let d = c.classify(
        &parse_chat(br#"{"model":"auto","messages":[{"role":"user","content":"ok so what now"}]}"#)
            .unwrap(),
    );
    assert_eq!((d.domain.as_str(), d.by), ("general", "threshold"));
    assert!(d.confidence < 0.999);
}

/// `thinkgate route --explain --json` with `args`, which must succeed; its plan.
fn explain_json(args: &[&str], body: &str) -> Value {
    let all: Vec<&str> = ["route", "--explain", "--json"]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    let (code, out, err) = run_cli(&all, body);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn classify_cli_answers_one_json_line_per_request_in_order() {
    let lines = [
        r#"{"model":"auto","messages":[{"role":"user","content":"My knee hurts after running, should I ice it?"}]}"#,
        r#"{"model":"auto","messages":[{"role":"user","content":"Write a Go function to reverse a slice"}]}"#,
        r#"{"model":"auto","messages":[{"role":"user","content":[{"type":"text","text":"what is this"},{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#,
    ];
    let (code, out, err) = run_cli(
        &["classify", "--config", "config/demo.toml"],
        &(lines.join("\n") + "\n"),
    );
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let domains: Vec<&str> = rows.iter().map(|r| r["domain"].as_str().unwrap()).collect();
    assert_eq!(domains, ["health", "coding", "vision"]);
    for r in &rows {
        let c = r["confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&c));
        assert_eq!(r["scores"].as_object().unwrap().len(), 9);
    }
    // A bad line gets an error line in its place, and a failing exit code.
    let (code, out, _) = run_cli(
        &["classify"],
        &format!("{}\nnot json\n{}\n", lines[0], lines[1]),
    );
    assert_eq!(code, 1);
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    assert!(rows[1]["error"].as_str().unwrap().starts_with("line 2:"));
}

#[test]
fn route_explain_shows_the_whole_plan() {
    let body = r#"{"model":"auto","messages":[{"role":"user","content":"Prove that the square root of 3 is irrational."}]}"#;
    let plan = explain_json(&["--config", "config/demo.toml"], body);
    assert_eq!(plan["domain"]["domain"], "math");
    assert_eq!(plan["mode"]["mode"], "thinking");
    assert_eq!(plan["mode"]["from"], "config default");
    let candidates = plan["candidates"].as_array().unwrap();
    assert!(candidates.len() >= 4);
    assert_eq!(plan["chosen"], candidates[0]["model"]);
    assert_eq!(
        plan["fallbacks"].as_array().unwrap().len(),
        candidates.len() - 1
    );
    // Scores are in policy order.
    let scores: Vec<f64> = candidates
        .iter()
        .map(|c| c["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");

    let (code, text, _) = run_cli(
        &["route", "--explain", "--config", "config/demo.toml"],
        body,
    );
    assert_eq!(code, 0);
    for part in [
        "mode       thinking",
        "domain     math",
        "candidates",
        "chosen",
        "fallbacks",
    ] {
        assert!(text.contains(part), "{text}");
    }
    let (code, _, err) = run_cli(&["route", "--explain", "--config", "config/demo.toml"], "{");
    assert_eq!(code, 1);
    assert!(err.contains("not valid JSON"), "{err}");
}

#[test]
fn route_explain_marks_estimates_and_shows_the_contemplating_cast() {
    let body = r#"{"model":"auto:contemplating","messages":[{"role":"user","content":"Prove that the square root of 3 is irrational."}]}"#;
    let plan = explain_json(&["--config", "config/demo.toml"], body);
    let candidates = plan["candidates"].as_array().unwrap();
    // claude-opus-4.6 publishes no math figure: its score is estimated, and says from what.
    let opus = candidates
        .iter()
        .find(|c| c["model"] == "claude-opus-4.6")
        .unwrap();
    let why = opus["estimated"].as_str().unwrap();
    assert!(
        why.contains("no math figure") && why.contains("general 53.0"),
        "{why}"
    );
    // A published figure is not estimated.
    let gemini = candidates
        .iter()
        .find(|c| c["model"] == "gemini-3.1-pro")
        .unwrap();
    assert_eq!(gemini["estimated"], Value::Null);
    assert_eq!(gemini["score"], 44.7);
    // The model with no scores is listed as no candidate at all.
    let not_ranked = plan["not_ranked"].as_array().unwrap();
    assert!(not_ranked.iter().any(|m| m["model"] == "qwen3-local"
        && m["reason"]
            .as_str()
            .unwrap()
            .contains("no published scores")));
    // The cast: three agents (demo: agents = 3, models = "same") on the chosen model, each a
    // share of the budget after the synthesis' quarter.
    let cast = &plan["contemplating"];
    let agents = cast["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 3);
    let total = plan["mode"]["reasoning_budget"].as_u64().unwrap();
    for a in agents {
        assert_eq!(a["model"], plan["chosen"]);
        assert_eq!(a["reasoning_budget"], (total - total / 4) / 3);
    }
    assert_eq!(cast["synthesis"]["model"], plan["chosen"]);
    assert_eq!(cast["synthesis"]["reasoning_budget"], total / 4);

    let (code, text, _) = run_cli(
        &["route", "--explain", "--config", "config/demo.toml"],
        body,
    );
    assert_eq!(code, 0);
    for part in [
        "* estimated: no math figure",
        "qwen3-local",
        "no published scores",
        "contemplating\n  agent 1",
        "synthesis",
    ] {
        assert!(text.contains(part), "{part}\n{text}");
    }
}

#[test]
fn route_explain_exits_non_zero_when_nothing_fits_and_plans_as_a_key() {
    let path = write_config(
        "explain-nothing-fits",
        &config_text(
            None,
            r#"
[models.small]
provider = "sim"
context_window = 50
scores = { general = 50, math = 40 }
"#,
        ),
    );
    let config = path.to_str().unwrap();
    let long = "word ".repeat(400);
    let body =
        json!({"model": "auto", "messages": [{"role": "user", "content": long}]}).to_string();
    let (code, text, err) = run_cli(&["route", "--explain", "--config", config], &body);
    assert_eq!(code, 1, "{text}{err}");
    assert!(text.contains("excluded: context window 50"), "{text}");
    assert!(text.contains("chosen     none:"), "{text}");

    // As a client key: an unknown name is an error; a key limited to some models sees the
    // others excluded for it.
    let keyed = write_config(
        "explain-key",
        &config_text(
            None,
            r#"
[models.big]
provider = "sim"
context_window = 100000
scores = { general = 60, math = 50 }

[models.other]
provider = "sim"
context_window = 100000
scores = { general = 50, math = 40 }

[keys.team]
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
models = ["auto", "other"]
"#,
        )
        .replace("auth = \"none\"", "auth = \"keys\""),
    );
    let config = keyed.to_str().unwrap();
    let body = r#"{"model":"auto","messages":[{"role":"user","content":"solve x^2 = 9"}]}"#;
    let (code, _, err) = run_cli(
        &["route", "--explain", "--config", config, "--key", "nobody"],
        body,
    );
    assert_eq!(code, 1);
    assert!(err.contains("no client key named `nobody`"), "{err}");
    let plan = explain_json(&["--config", config, "--key", "team"], body);
    assert_eq!(plan["key"], "team");
    assert_eq!(plan["chosen"], "other");
    let big = plan["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["model"] == "big")
        .unwrap();
    assert_eq!(big["excluded"], "not allowed for key `team`");
}
