//! The domain classifier against the held-out evaluation set (tests/classifier/eval.jsonl,
//! kept apart from the training examples in config/domains.toml): macro accuracy and the
//! confusion matrix, and the tricky cases by name.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use thinkgate_proxy::ingress::parse_chat;
use thinkgate_proxy::plan::classify::Classifier;

use crate::support::*;

fn classifier() -> Classifier {
    let cfg = parse_config(&config_text(None, ""));
    Classifier::train(&cfg.domains, cfg.confidence_threshold)
}

/// An eval row as the request a client would send.
fn request(row: &Value) -> Value {
    let text = row["text"].as_str().unwrap();
    let content = if row["image"] == true {
        json!([{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}])
    } else {
        json!(text)
    };
    let mut body = json!({"model": "auto", "messages": [{"role": "user", "content": content}]});
    if row["tools"] == true {
        body["tools"] = json!([{"type": "function", "function": {"name": "act", "parameters": {"type": "object"}}}]);
    }
    body
}

#[test]
fn held_out_requests_are_classified_with_high_macro_accuracy() {
    let c = classifier();
    let rows: Vec<Value> = include_str!("../classifier/eval.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut confusion: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for row in &rows {
        let req = parse_chat(request(row).to_string().as_bytes()).unwrap();
        let got = c.classify(&req).domain;
        let want = row["domain"].as_str().unwrap().to_string();
        if got != want {
            eprintln!("miss: {want} → {got}: {}", row["text"]);
        }
        *confusion.entry(want).or_default().entry(got).or_default() += 1;
    }
    let domains: Vec<&String> = confusion.keys().collect();
    let mut report = format!("{:>10}", "");
    for d in &domains {
        report.push_str(&format!(" {:>9}", &d[..d.len().min(9)]));
    }
    let mut recalls = Vec::new();
    for want in &domains {
        let row = &confusion[*want];
        let total: usize = row.values().sum();
        let right = row.get(*want).copied().unwrap_or(0);
        recalls.push(right as f64 / total as f64);
        report.push_str(&format!("\n{:>10}", &want[..want.len().min(10)]));
        for got in &domains {
            report.push_str(&format!(" {:>9}", row.get(*got).copied().unwrap_or(0)));
        }
    }
    let macro_accuracy = recalls.iter().sum::<f64>() / recalls.len() as f64;
    println!(
        "{report}\nmacro accuracy {:.1}% over {} requests",
        macro_accuracy * 100.0,
        rows.len()
    );
    eprintln!(
        "{report}\nmacro accuracy {:.1}% over {} requests",
        macro_accuracy * 100.0,
        rows.len()
    );
    assert!(rows.len() >= 9 * 40);
    assert!(
        macro_accuracy >= 0.90,
        "macro accuracy {macro_accuracy:.3}\n{report}"
    );
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
        &parse_chat(
            br#"{"model":"auto","messages":[{"role":"user","content":"Write a Rust function"}]}"#,
        )
        .unwrap(),
    );
    assert_eq!((d.domain.as_str(), d.by), ("general", "threshold"));
    assert!(d.confidence < 0.999);
}

fn run_cli(args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_thinkgate"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    let (code, out, err) = run_cli(
        &[
            "route",
            "--explain",
            "--json",
            "--config",
            "config/demo.toml",
        ],
        body,
    );
    assert_eq!(code, 0, "{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
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
