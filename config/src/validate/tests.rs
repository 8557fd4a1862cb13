//! Validation tests: every rule, and the file, line and key of each error.
use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("t.toml"), &|v| {
        (v == "SET_KEY").then(|| "sk-secret-value".to_string())
    })
}

const MINIMAL: &str = r#"auth = "none"
[routing]
default_model = "m"

[providers.sim]
kind = "simulator"

[models.m]
provider = "sim"
context_window = 1000
"#;

#[test]
fn minimal_config_is_valid() {
    let cfg = parse(MINIMAL).expect("valid");
    assert_eq!(cfg.default_model, "m");
    assert_eq!(cfg.models[0].upstream_model, "m");
    assert_eq!(
        cfg.providers[0].forward_headers,
        vec![HeaderPattern::Prefix("x-sim-".into())]
    );
}

#[test]
fn unknown_key_names_line_key_and_suggestion() {
    let text = format!("{MINIMAL}\n[server]\nlisten = \"127.0.0.1:1\"\nlog_fromat = \"json\"\n");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key().unwrap().to_string(), "server.log_fromat");
    assert!(err.message().contains("did you mean `log_format`"), "{err}");
    assert_eq!(
        err.line(),
        text.lines()
            .position(|l| l.starts_with("log_fromat"))
            .unwrap()
            + 1
    );
    assert!(err.to_string().starts_with("t.toml:"), "{err}");
}

#[test]
fn wrong_type_names_the_key() {
    let text = MINIMAL.replace("context_window = 1000", "context_window = \"big\"");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key().unwrap().to_string(), "models.m.context_window");
    assert_eq!(err.line(), 10);
}

#[test]
fn type_errors_speak_toml_not_rust() {
    let cases = [
        (
            "context_window = \"big\"",
            "must be a whole number of 0 or more, not the text \"big\"",
        ),
        (
            "context_window = -5",
            "must be a whole number of 0 or more, not the number -5",
        ),
        (
            "context_window = 1000\ncapabilities = \"tools\"",
            "must be a list, such as [\"a\", \"b\"], not the text \"tools\"",
        ),
        (
            "context_window = 1000\nprice_input_per_mtok = \"cheap\"",
            "must be a number, not the text \"cheap\"",
        ),
    ];
    for (line, message) in cases {
        let err = parse(&MINIMAL.replace("context_window = 1000", line)).unwrap_err();
        assert_eq!(err.message(), message, "{err}");
        for rust in ["u64", "f64", "sequence", "struct"] {
            assert!(!err.to_string().contains(rust), "{err}");
        }
    }
    let text = format!("{MINIMAL}[server]\nallow_public_without_auth = \"yes\"\n");
    assert_eq!(
        parse(&text).unwrap_err().message(),
        "must be true or false, not the text \"yes\""
    );
}

#[test]
fn syntax_error_has_a_line() {
    let err = parse("[server\nlisten = 1").unwrap_err();
    assert_eq!(err.line(), 1, "{err}");
}

#[test]
fn unknown_provider_reference_is_suggested() {
    let err = parse(&MINIMAL.replace("provider = \"sim\"", "provider = \"simm\"")).unwrap_err();
    assert!(err.message().contains("did you mean `sim`"), "{err}");
    assert_eq!(err.key().unwrap().to_string(), "models.m.provider");
    assert_eq!(err.line(), 9);
}

#[test]
fn secrets_resolve_from_env_and_never_print() {
    let text = format!(
        "{MINIMAL}\n[providers.a]\nkind = \"openai\"\napi_key = \"${{SET_KEY}}\"\n\
         [providers.b]\nkind = \"openai\"\napi_key = \"${{UNSET_KEY}}\"\n"
    );
    let cfg = parse(&text).expect("valid");
    let a = cfg.provider("a").unwrap();
    assert!(a.usable());
    assert!(!cfg.provider("b").unwrap().usable());
    assert!(!format!("{cfg:?}").contains("sk-secret-value"));
}

#[test]
fn literal_secret_is_rejected_without_echo() {
    let text = format!("{MINIMAL}\n[providers.a]\nkind = \"openai\"\napi_key = \"sk-live-123\"\n");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key().unwrap().to_string(), "providers.a.api_key");
    assert!(!err.to_string().contains("sk-live-123"));
}

#[test]
fn bad_enum_value_lists_choices() {
    let text = MINIMAL.replace("kind = \"simulator\"", "kind = \"openia\"");
    let err = parse(&text).unwrap_err();
    assert!(err.message().contains("did you mean `openai`"), "{err}");
    assert_eq!(err.line(), 6);
}

#[test]
fn modes_validate_with_file_line_and_key() {
    let ok = format!(
        "{MINIMAL}\n[models.m.thinking]\nknob = \"effort\"\nefforts = [\"low\", \"high\"]\noverrun = \"force\"\n\n[modes]\ndefault = \"thinking\"\n[modes.domain_defaults]\nhealth = \"instant\"\n[modes.thinking]\nreasoning_budget = 2048\n[modes.thinking.domains]\nmath = 1024\n[modes.efforts]\nturbo = {{ mode = \"contemplating\", reasoning_budget = 9000 }}\n"
    );
    let cfg = parse(&ok).expect("valid");
    assert_eq!(cfg.modes.default, Some(Mode::Thinking));
    assert_eq!(cfg.modes.policy(Mode::Thinking).reasoning_budget, 2048);
    assert_eq!(
        cfg.modes.policy(Mode::Thinking).domain_budgets["math"],
        1024
    );
    assert_eq!(
        cfg.modes.efforts.len(),
        1,
        "a table given replaces the built-in one"
    );
    assert_eq!(cfg.models[0].thinking.overrun, Some(Overrun::Force));

    let bad = |text: String, key: &str, says: &str, line: usize| {
        let err = parse(&text).unwrap_err();
        assert_eq!(
            err.key().map(|k| k.to_string()).as_deref(),
            Some(key),
            "{err}"
        );
        assert!(err.message().contains(says), "{err}");
        assert_eq!(err.line(), line, "{err}");
    };
    bad(
        format!("{MINIMAL}[modes]\ndefault = \"thinkin\"\n"),
        "modes.default",
        "did you mean `thinking`",
        12,
    );
    bad(
        format!("{MINIMAL}[modes.thinking]\nreasoning_budget = 0\n"),
        "modes.thinking.reasoning_budget",
        "use instant mode",
        12,
    );
    bad(
        format!("{MINIMAL}[modes.instant]\nanswer_reserve = 0\n"),
        "modes.instant.answer_reserve",
        "at least 1",
        12,
    );
    bad(
        format!("{MINIMAL}[modes]\nhint = \"be brief\"\n"),
        "modes.hint",
        "{budget}",
        12,
    );
    bad(
        format!("{MINIMAL}[modes.efforts]\nlow = {{ mode = \"fast\" }}\n"),
        "modes.efforts.low.mode",
        "is not one of",
        12,
    );
    bad(
        format!("{MINIMAL}\n[models.m.thinking]\noverrun = \"truncate\"\n"),
        "models.m.thinking.overrun",
        "`force`, `cut`, `length`",
        13,
    );
    bad(
        format!("{MINIMAL}\n[models.m.thinking]\nmin_budget = 128\nmax_budget = 64\n"),
        "models.m.thinking.max_budget",
        "at least min_budget",
        14,
    );
}

#[test]
fn contemplating_and_routing_errors_name_the_key() {
    let bad = |extra: &str, key: &str, says: &str| {
        let err = parse(&format!("{MINIMAL}{extra}")).unwrap_err();
        assert_eq!(
            err.key().map(|k| k.to_string()).as_deref(),
            Some(key),
            "{err}"
        );
        assert!(err.message().contains(says), "{err}");
    };
    bad(
        "[contemplating]\nagents = 0\n",
        "contemplating.agents",
        "between 1 and 16",
    );
    bad(
        "[contemplating]\nagents = 2\nquorum = 3\n",
        "contemplating.quorum",
        "number of agents (2)",
    );
    bad(
        "[contemplating]\nsynthesis_model = \"mm\"\n",
        "contemplating.synthesis_model",
        "did you mean `m`",
    );
    bad(
        "[contemplating]\nsynthesis_share = 1.0\n",
        "contemplating.synthesis_share",
        "below 1",
    );
    bad(
        "[contemplating]\nmodels = \"all\"\n",
        "contemplating.models",
        "`same`, `top`",
    );
    bad(
        "[routing.policies]\nmath = [\"nope\"]\n",
        "routing.policies.math.0",
        "not a configured model",
    );
    bad(
        "[routing.policies]\nmath = \"cheapest\"\n",
        "routing.policies.math",
        "`best`, `efficient`",
    );
    bad(
        "\n[models.m.scores]\nmath = 40\n",
        "models.m.scores",
        "needs a `general` score",
    );
    bad(
        "[domains.Legal]\nexamples = [\"x\"]\n",
        "domains.Legal",
        "lowercase",
    );
    bad(
        "[domains.legal]\ndescription = \"law\"\n",
        "domains.legal.examples",
        "needs examples",
    );
    let digest = "ab".repeat(32);
    bad(
        &format!("[keys.k]\nsha256 = \"{}\"\n", &digest[..62]),
        "keys.k.sha256",
        "64 hexadecimal",
    );
    // Multi-byte characters at 64 bytes long: refused, not a panic.
    bad(
        &format!(
            "[keys.k]\nsha256 = \"{}é{}\"\n",
            &digest[..31],
            &digest[..31]
        ),
        "keys.k.sha256",
        "64 hexadecimal",
    );
    bad(
        "[keys.k]\nsecret = \"tg-literal\"\n",
        "keys.k.secret",
        "environment reference",
    );
    bad(
        &format!("[keys.k]\nsecret = \"${{K}}\"\nsha256 = \"{digest}\"\n"),
        "keys.k",
        "exactly one",
    );
    assert!(parse(&format!("{MINIMAL}[keys.k]\nsha256 = \"{digest}\"\n")).is_ok());
    let ok = parse(&format!("{MINIMAL}[contemplating]\nagents = 4\nquorum = 3\ndeadline = \"30s\"\n[contemplating.domains]\nmath = 6\n")).unwrap();
    assert_eq!(ok.contemplating.agents_for(Some("math")), 6);
    assert_eq!(ok.contemplating.agents_for(Some("health")), 4);
    assert_eq!(ok.contemplating.deadline, Duration::from_secs(30));
}

#[test]
fn reserved_model_ids_and_missing_default() {
    let err = parse(&MINIMAL.replace("[models.m]", "[models.\"a:b\"]")).unwrap_err();
    assert!(err.message().contains("reserved"), "{err}");
    let err =
        parse(&MINIMAL.replace("default_model = \"m\"", "default_model = \"n\"")).unwrap_err();
    assert_eq!(err.key().unwrap().to_string(), "routing.default_model");
}

#[test]
fn simulator_profiles_inherit_the_default() {
    let text = format!(
        "{MINIMAL}\n[simulator.default]\nreasoning_tokens = 7\n[simulator.models.x]\nreasoning = \"hidden\"\n"
    );
    let cfg = parse(&text).expect("valid");
    let p = cfg.simulator.profile("x");
    assert_eq!(p.reasoning, ReasoningStyle::Hidden);
    assert_eq!(p.reasoning_tokens, 7);
    assert_eq!(cfg.simulator.profile("other").reasoning_tokens, 7);
}

#[test]
fn histogram_buckets_must_increase() {
    let err = parse(&format!(
        "{MINIMAL}\n[metrics]\nttft_buckets = [1.0, 0.5]\n"
    ))
    .unwrap_err();
    assert_eq!(err.key().unwrap().to_string(), "metrics.ttft_buckets");
    let cfg = parse(&format!(
        "{MINIMAL}\n[metrics]\nttft_buckets = [0.5, 1.0]\n"
    ))
    .unwrap();
    assert_eq!(cfg.metrics.ttft_buckets, Some(vec![0.5, 1.0]));
}

#[test]
fn bad_duration_is_explained() {
    let text = format!("{MINIMAL}\n[server]\nshutdown_grace = \"soon\"\n");
    let err = parse(&text).unwrap_err();
    assert!(err.message().contains("not a duration"), "{err}");
}

#[test]
fn type_and_missing_key_errors_are_structured_and_name_the_key() {
    let err = parse(&MINIMAL.replace("[routing]", "[server]\nmax_body_bytes = \"big\"\n[routing]"))
        .unwrap_err();
    assert_eq!(err.key().unwrap().to_string(), "server.max_body_bytes");
    assert!(
        err.message()
            .contains("must be a whole number of 0 or more, not the text \"big\""),
        "{err}"
    );
    assert!(err.line() > 0);
    let err = parse(&format!(
        "{MINIMAL}\n[providers.extra]\nbase_url = \"http://x\"\n"
    ))
    .unwrap_err();
    assert_eq!(err.key().unwrap().to_string(), "providers.extra.kind");
    assert_eq!(err.message(), "is required");
}

#[test]
fn model_names_map_exact_then_longest_prefix() {
    let text = format!(
        "{MINIMAL}\n[routing.model_names]\n\"claude-*\" = \"auto\"\n\"claude-opus-*\" = \"m:contemplating\"\n\"gpt-4o\" = \"m\"\n"
    );
    // [routing] is already open in MINIMAL: the table is a sub-table of it.
    let cfg = parse(&text).expect("valid");
    let names = &cfg.routing.model_names;
    assert_eq!(names.resolve("gpt-4o"), Some("m"));
    assert_eq!(names.resolve("gpt-4o-mini"), None);
    assert_eq!(names.resolve("claude-opus-4-1"), Some("m:contemplating"));
    assert_eq!(names.resolve("claude-sonnet-4-5"), Some("auto"));
    assert_eq!(names.resolve("claude"), None);
}

#[test]
fn model_names_refuse_bad_patterns_and_targets_by_key_and_line() {
    for (entry, says) in [
        ("\"cl*ude\" = \"m\"", "ends in one `*`"),
        (
            "\"claude-*\" = \"n\"",
            "`n` is neither `auto` nor a configured model",
        ),
        (
            "\"claude-*\" = \"auto:deep\"",
            "`deep` is not a reasoning mode",
        ),
    ] {
        let text = format!("{MINIMAL}\n[routing.model_names]\n{entry}\n");
        let err = parse(&text).unwrap_err();
        assert!(err.message().contains(says), "{entry}: {err}");
        let name = entry.split('"').nth(1).unwrap();
        // Written as TOML writes a key with a `*` in it.
        assert_eq!(
            err.key().unwrap().to_string(),
            format!("routing.model_names.\"{name}\"")
        );
        assert_eq!(err.line(), text.lines().count(), "{entry}: {err}");
    }
}

#[test]
fn an_embeddings_model_cannot_be_the_default_chat_model() {
    let text = MINIMAL.replace(
        "context_window = 1000\n",
        "context_window = 1000\ncapabilities = [\"embeddings\"]\n",
    );
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key().unwrap().to_string(), "routing.default_model");
    assert!(err.message().contains("embeddings model"), "{err}");
    let cfg = parse(&format!(
        "{MINIMAL}\n[models.e]\nprovider = \"sim\"\ncontext_window = 512\ncapabilities = [\"embeddings\"]\n"
    ))
    .unwrap();
    assert!(cfg.models.iter().any(|m| m.id == "e" && m.embeddings));
}

#[test]
fn openai_providers_may_speak_the_responses_api_and_others_may_not() {
    let ok = format!(
        "{MINIMAL}[providers.o]\nkind = \"openai\"\nformat = \"responses\"\n[providers.v]\nkind = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:8000/v1\"\nformat = \"responses\"\ndialect = \"vllm\"\n"
    );
    let cfg = parse(&ok).unwrap();
    let format = |name: &str| {
        cfg.providers
            .iter()
            .find(|p| p.name == name)
            .unwrap()
            .format
    };
    assert_eq!(format("o"), WireFormat::Responses);
    assert_eq!(format("v"), WireFormat::Responses);
    let bad = format!("{MINIMAL}[providers.a]\nkind = \"anthropic\"\nformat = \"responses\"\n");
    let err = parse(&bad).unwrap_err();
    assert!(err.to_string().contains("providers.a.format"), "{err}");
    let typo = format!("{MINIMAL}[providers.o]\nkind = \"openai\"\nformat = \"response\"\n");
    let err = parse(&typo).unwrap_err();
    assert!(err.to_string().contains("responses"), "{err}");
}

#[test]
fn retry_and_breaker_policies_default_and_read_their_tables() {
    let cfg = parse(MINIMAL).expect("valid");
    let p = &cfg.providers[0];
    assert_eq!(p.retry.attempts, 2);
    assert_eq!(p.retry.on_status, [429, 500, 502, 503, 504]);
    assert_eq!(p.retry.per_try_timeout, p.response_timeout);
    assert_eq!(p.breaker.consecutive_failures, 5);
    assert_eq!(cfg.server.retry_budget.ratio, 0.2);
    assert_eq!(cfg.server.retry_budget.min_per_second, 5);

    let text = format!(
        "{MINIMAL}[providers.sim.retry]\nattempts = 4\non_status = [408, 503]\nbackoff = \"20ms\"\n\
         [providers.sim.breaker]\nfailure_rate = 0.25\nopen_for = \"3s\"\n\
         [server]\nretry_budget = 0.1\nmin_retries_per_second = 0\n"
    );
    let cfg = parse(&text).expect("valid");
    let p = &cfg.providers[0];
    assert_eq!(
        (p.retry.attempts, p.retry.on_status.clone()),
        (4, vec![408, 503])
    );
    assert_eq!(p.retry.backoff, Duration::from_millis(20));
    assert_eq!(p.breaker.failure_rate, 0.25);
    assert_eq!(p.breaker.open_for, Duration::from_secs(3));
    assert_eq!(cfg.server.retry_budget.min_per_second, 0);
}

#[test]
fn bad_retry_and_breaker_values_name_their_key_and_line() {
    let cases = [
        (
            "[providers.sim.retry]\nattempts = 0\n",
            "providers.sim.retry.attempts",
            "between 1 and 10",
        ),
        (
            "[providers.sim.retry]\non_status = [500, 404]\n",
            "providers.sim.retry.on_status.1",
            "404 is not a status worth retrying",
        ),
        (
            "[providers.sim.retry]\nper_try_timeout = \"10m\"\n",
            "providers.sim.retry.per_try_timeout",
            "longer than the provider's response_timeout",
        ),
        (
            "[providers.sim.retry]\nbackoff = \"5s\"\nmax_backoff = \"1s\"\n",
            "providers.sim.retry.max_backoff",
            "shorter than backoff",
        ),
        (
            "[providers.sim.retry]\nretries = 3\n",
            "providers.sim.retry.retries",
            "unknown",
        ),
        (
            "[providers.sim.breaker]\nfailure_rate = 1.5\n",
            "providers.sim.breaker.failure_rate",
            "share between 0 and 1",
        ),
        (
            "[providers.sim.breaker]\nfailure_rate = 0.0\n",
            "providers.sim.breaker.failure_rate",
            "more than 0",
        ),
        (
            "[providers.sim.breaker]\nopen_for = \"0s\"\n",
            "providers.sim.breaker.open_for",
            "longer than zero",
        ),
        (
            "[server]\nretry_budget = 2\n",
            "server.retry_budget",
            "share between 0 and 1",
        ),
    ];
    for (extra, key, message) in cases {
        let text = format!("{MINIMAL}{extra}");
        let err = parse(&text).unwrap_err();
        assert_eq!(
            err.key().map(|k| k.to_string()).as_deref(),
            Some(key),
            "{err}"
        );
        assert!(err.message().contains(message), "{key}: {err}");
        assert!(
            err.line() > MINIMAL.lines().count(),
            "{key}: line {}",
            err.line()
        );
    }
}

#[test]
fn deployments_list_the_providers_serving_a_model() {
    let text = format!(
        "{MINIMAL}[providers.east]\nkind = \"simulator\"\n\
         [models.multi]\ncontext_window = 1000\nupstream_model = \"base\"\nbalance = \"least_in_flight\"\n\
         deployments = [{{ provider = \"sim\" }}, {{ provider = \"east\", upstream_model = \"e\", weight = 3, requests_per_minute = 60, tokens_per_minute = 1000 }}]\n"
    );
    let cfg = parse(&text).expect("valid");
    let m = cfg.models.iter().find(|m| m.id == "multi").unwrap();
    assert_eq!(
        (m.provider.as_str(), m.upstream_model.as_str()),
        ("sim", "base")
    );
    assert_eq!(m.balance, Balance::LeastInFlight);
    assert_eq!(m.deployments.len(), 2);
    assert_eq!(m.deployments[1].upstream_model, "e");
    assert_eq!(m.deployments[1].weight, 3);
    assert_eq!(m.deployments[1].requests_per_minute, Some(60));
    assert_eq!(m.deployments[1].tokens_per_minute, Some(1000));
    // A model with `provider` has that one deployment.
    let single = cfg.models.iter().find(|m| m.id == "m").unwrap();
    assert_eq!(single.deployments.len(), 1);
    assert_eq!(single.deployments[0].provider, "sim");
}

#[test]
fn every_balance_name_parses_and_an_unknown_one_names_the_choices() {
    for name in Balance::NAMES {
        let text = format!(
            "{MINIMAL}[models.multi]\ncontext_window = 1000\nbalance = \"{name}\"\n\
             deployments = [{{ provider = \"sim\" }}]\n"
        );
        let cfg = parse(&text).expect("valid");
        let m = cfg.models.iter().find(|m| m.id == "multi").unwrap();
        assert_eq!(m.balance.as_str(), name);
    }
    // Each name is its own variant, not only a round trip through the names.
    assert_eq!(
        Balance::NAMES.map(Balance::parse),
        [
            Some(Balance::Weighted),
            Some(Balance::LeastInFlight),
            Some(Balance::PeakEwma),
            Some(Balance::Ordered),
        ]
    );
    let text = format!(
        "{MINIMAL}[models.multi]\ncontext_window = 1000\nbalance = \"priority\"\n\
         deployments = [{{ provider = \"sim\" }}]\n"
    );
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("balance") && err.contains("ordered"), "{err}");
}

#[test]
fn bad_deployments_name_their_key() {
    let model = |body: &str| format!("{MINIMAL}[models.x]\ncontext_window = 1000\n{body}\n");
    let cases = [
        ("", "models.x", "needs `provider`"),
        (
            "provider = \"sim\"\ndeployments = [{ provider = \"sim\" }]",
            "models.x.deployments",
            "instead of `provider`",
        ),
        ("deployments = []", "models.x.deployments", "at least one"),
        (
            "deployments = [{ provider = \"simm\" }]",
            "models.x.deployments.0.provider",
            "did you mean `sim`",
        ),
        (
            "deployments = [{ provider = \"sim\" }, { provider = \"sim\" }]",
            "models.x.deployments.1.provider",
            "twice",
        ),
        (
            "deployments = [{ provider = \"sim\", weight = 0 }]",
            "models.x.deployments.0.weight",
            "between 1 and 1000",
        ),
        (
            "deployments = [{ provider = \"sim\", requests_per_minute = 0 }]",
            "models.x.deployments.0.requests_per_minute",
            "at least 1",
        ),
        (
            "provider = \"sim\"\nbalance = \"random\"",
            "models.x.balance",
            "is not one of",
        ),
    ];
    for (body, key, message) in cases {
        let err = parse(&model(body)).unwrap_err();
        assert_eq!(
            err.key().map(|k| k.to_string()).as_deref(),
            Some(key),
            "{err}"
        );
        assert!(err.message().contains(message), "{key}: {err}");
    }
}

#[test]
fn hedge_after_is_p95_or_a_duration() {
    let with = |v: &str| format!("{MINIMAL}[providers.sim.retry]\nhedge_after = {v}\n");
    let cfg = parse(&with("\"p95\"")).expect("valid");
    assert_eq!(cfg.providers[0].retry.hedge_after, Some(HedgeAfter::P95));
    let cfg = parse(&with("\"800ms\"")).expect("valid");
    assert_eq!(
        cfg.providers[0].retry.hedge_after,
        Some(HedgeAfter::Fixed(Duration::from_millis(800)))
    );
    assert_eq!(parse(MINIMAL).unwrap().providers[0].retry.hedge_after, None);
    let err = parse(&with("\"p99\"")).unwrap_err();
    assert_eq!(
        err.key().unwrap().to_string(),
        "providers.sim.retry.hedge_after"
    );
    assert!(
        err.message().contains("neither \"p95\" nor a duration"),
        "{err}"
    );
}

#[test]
fn every_independent_error_is_reported_at_once() {
    let text = format!(
        "{MINIMAL}[providers.bad]\nkind = \"openai\"\nhttp2_connections = 0\n\
         [models.x]\nprovider = \"nope\"\ncontext_window = 10\n\
         [server]\nmax_connections = 0\n"
    );
    let err = parse(&text).unwrap_err();
    let keys: Vec<String> = err
        .each()
        .iter()
        .map(|e| e.key().unwrap().to_string())
        .collect();
    assert_eq!(
        keys,
        [
            "providers.bad.http2_connections",
            "models.x.provider",
            "server.max_connections"
        ],
        "{err}"
    );
    // In file order, a line each, each with its own file and line.
    let lines: Vec<usize> = err.each().iter().map(|e| e.line()).collect();
    assert!(lines.windows(2).all(|w| w[0] < w[1]), "{lines:?}");
    assert_eq!(err.to_string().lines().count(), 3);
    assert!(
        err.to_string().lines().all(|l| l.starts_with("t.toml:")),
        "{err}"
    );
}

#[test]
fn telemetry_resolves_header_references_and_keeps_them_secret() {
    let text = format!(
        "{MINIMAL}\n[telemetry]\nendpoint = \"http://127.0.0.1:4318/\"\nsample_ratio = 0.25\n\
         headers = {{ authorization = \"Bearer ${{SET_KEY}}\", \"x-dataset\" = \"prod\" }}\n"
    );
    let cfg = parse(&text).expect("valid");
    let t = &cfg.telemetry;
    assert_eq!(t.endpoint.as_deref(), Some("http://127.0.0.1:4318"));
    assert_eq!(t.sample_ratio, 0.25);
    assert_eq!(t.headers[0].0, "authorization");
    assert_eq!(t.headers[0].1.expose(), "Bearer sk-secret-value");
    assert_eq!(t.headers[1].1.expose(), "prod");
    assert!(!format!("{t:?}").contains("sk-secret-value"));
    // Without an endpoint nothing is exported.
    assert_eq!(parse(MINIMAL).unwrap().telemetry.endpoint, None);
}

#[test]
fn telemetry_errors_name_their_key() {
    let cases = [
        (
            "endpoint = \"udp://x\"",
            "telemetry.endpoint",
            "not an http",
        ),
        (
            "sample_ratio = 2.0",
            "telemetry.sample_ratio",
            "between 0 and 1",
        ),
        (
            "headers = { authorization = \"${NOT_SET}\" }",
            "telemetry.headers.authorization",
            "`${NOT_SET}`, which is not set",
        ),
        (
            "headers = { authorization = \"Bearer ${OPEN\" }",
            "telemetry.headers.authorization",
            "closing",
        ),
        (
            "headers = { \"bad name\" = \"x\" }",
            "telemetry.headers.\"bad name\"",
            "header name",
        ),
        (
            "metrics_interval = \"10ms\"",
            "telemetry.metrics_interval",
            "at least 1s",
        ),
        ("queue_spans = 1", "telemetry.queue_spans", "between 16"),
        (
            "export_timeout = \"0s\"",
            "telemetry.export_timeout",
            "longer than zero",
        ),
        (
            "endpont = \"http://x\"",
            "telemetry.endpont",
            "did you mean `endpoint`",
        ),
    ];
    for (line, key, says) in cases {
        let text = format!("{MINIMAL}\n[telemetry]\n{line}\n");
        let err = parse(&text).unwrap_err();
        assert_eq!(
            err.key().map(|k| k.to_string()).as_deref(),
            Some(key),
            "{line}: {err}"
        );
        assert!(err.message().contains(says), "{line}: {err}");
        assert_eq!(err.line(), MINIMAL.lines().count() + 3, "{line}: {err}");
    }
}

#[test]
fn state_is_memory_by_default_and_redis_when_asked() {
    assert_eq!(parse(MINIMAL).unwrap().state, StateBackend::Memory);
    let text = format!(
        "{MINIMAL}\n[state]\nbackend = \"redis\"\nurl = \"redis://:${{SET_KEY}}@127.0.0.1:6379/0\"\nreplicas = 3\non_failure = \"closed\"\n"
    );
    let StateBackend::Redis(r) = parse(&text).unwrap().state else {
        panic!("redis")
    };
    assert_eq!(r.url.expose(), "redis://:sk-secret-value@127.0.0.1:6379/0");
    assert_eq!((r.replicas, r.on_failure), (3, OnFailure::Closed));
    assert_eq!(r.timeout, Duration::from_millis(10));
    assert!(!format!("{r:?}").contains("sk-secret-value"));
}

#[test]
fn state_errors_name_their_key_and_never_echo_the_url() {
    let cases = [
        ("backend = \"etcd\"", "state.backend", "one of"),
        ("backend = \"redis\"", "state.url", "is required"),
        ("url = \"redis://x\"", "state.url", "only applies"),
        (
            "backend = \"redis\"\nurl = \"http://pw@x\"",
            "state.url",
            "not a redis://",
        ),
        (
            "backend = \"redis\"\nurl = \"redis://x\"\ntimeout = \"5s\"",
            "state.timeout",
            "at most 1s",
        ),
        (
            "backend = \"redis\"\nurl = \"redis://x\"\non_failure = \"maybe\"",
            "state.on_failure",
            "one of",
        ),
        (
            "backend = \"redis\"\nurl = \"redis://x\"\nreplicas = 0",
            "state.replicas",
            "between 1",
        ),
    ];
    for (lines, key, says) in cases {
        let text = format!("{MINIMAL}\n[state]\n{lines}\n");
        let err = parse(&text).unwrap_err();
        assert_eq!(
            err.key().map(|k| k.to_string()).as_deref(),
            Some(key),
            "{lines}: {err}"
        );
        assert!(err.message().contains(says), "{lines}: {err}");
        assert!(!err.to_string().contains("pw@"), "{err}");
    }
}

#[test]
fn an_adaptive_mode_has_bounds_and_a_period() {
    let text = format!("{MINIMAL}\n[modes.thinking]\nreasoning_budget = 4096\nadaptive = true\nadaptive_period = \"30s\"\n");
    let cfg = parse(&text).unwrap();
    let a = cfg.modes.policy(Mode::Thinking).adaptive.unwrap();
    assert_eq!((a.min, a.max, a.percentile), (64, 4096, 90));
    assert_eq!(a.period, Duration::from_secs(30));
    assert_eq!(
        parse(MINIMAL)
            .unwrap()
            .modes
            .policy(Mode::Thinking)
            .adaptive,
        None
    );
    let cases = [
        (
            "adaptive_min = 64",
            "modes.thinking.adaptive_min",
            "only applies",
        ),
        (
            "adaptive = true\nadaptive_min = 5000",
            "modes.thinking.adaptive_min",
            "at most adaptive_max",
        ),
        (
            "adaptive = true\nadaptive_percentile = 100",
            "modes.thinking.adaptive_percentile",
            "between 50 and 99",
        ),
        (
            "adaptive = true\nadaptive_period = \"0s\"",
            "modes.thinking.adaptive_period",
            "longer than zero",
        ),
    ];
    for (lines, key, says) in cases {
        let text = format!("{MINIMAL}\n[modes.thinking]\n{lines}\n");
        let err = parse(&text).unwrap_err();
        assert_eq!(
            err.key().map(|k| k.to_string()).as_deref(),
            Some(key),
            "{lines}: {err}"
        );
        assert!(err.message().contains(says), "{lines}: {err}");
    }
}

#[test]
fn a_state_prefix_of_other_characters_is_refused() {
    let text = format!(
        "{MINIMAL}\n[state]\nbackend = \"redis\"\nurl = \"redis://x\"\nprefix = \"has space\"\n"
    );
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key().unwrap().to_string(), "state.prefix");
    assert!(err.message().contains("letters, digits"), "{err}");
}

#[test]
fn the_cache_is_off_by_default_and_follows_the_state_backend() {
    assert_eq!(parse(MINIMAL).unwrap().cache, None);
    let on = parse(&format!("{MINIMAL}\n[cache]\nenabled = true\n")).unwrap();
    let cache = on.cache.unwrap();
    assert_eq!(cache.ttl, Duration::from_secs(3600));
    assert_eq!(cache.max_bytes, 256 << 20);
    assert_eq!(cache.max_entry_bytes, 1 << 20);
    assert_eq!(cache.scope, crate::CacheScope::Key);
    assert_eq!(cache.backend, crate::CacheBackend::Memory);
    let text = format!(
        "{MINIMAL}\n[state]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\n\n\
         [cache]\nenabled = true\nscope = \"shared\"\nttl = \"10m\"\n"
    );
    let cache = parse(&text).unwrap().cache.unwrap();
    assert_eq!(cache.backend, crate::CacheBackend::Redis);
    assert_eq!(cache.scope, crate::CacheScope::Shared);
    assert_eq!(cache.ttl, Duration::from_secs(600));
}

#[test]
fn cache_errors_name_their_key() {
    let cases = [
        ("ttl = \"1h\"", "cache.ttl", "add `enabled = true`"),
        (
            "enabled = true\nttl = \"0s\"",
            "cache.ttl",
            "longer than zero",
        ),
        (
            "enabled = true\nttl = \"60d\"",
            "cache.ttl",
            "at most 30 days",
        ),
        (
            "enabled = true\nmax_bytes = 10",
            "cache.max_bytes",
            "between",
        ),
        (
            "enabled = true\nmax_bytes = 1048576\nmax_entry_bytes = 1048576",
            "cache.max_entry_bytes",
            "max_bytes / 16",
        ),
        (
            "enabled = true\nscope = \"global\"",
            "cache.scope",
            "`key`, `shared`",
        ),
        (
            "enabled = true\nbackend = \"redis\"",
            "cache.backend",
            "needs [state] backend = \"redis\"",
        ),
        (
            "enabled = true\nttll = \"1h\"",
            "cache.ttll",
            "did you mean `ttl`",
        ),
    ];
    for (lines, key, says) in cases {
        let text = format!("{MINIMAL}\n[cache]\n{lines}\n");
        let err = parse(&text).unwrap_err();
        assert_eq!(
            err.key().map(|k| k.to_string()).as_deref(),
            Some(key),
            "{lines}: {err}"
        );
        assert!(err.message().contains(says), "{lines}: {err}");
        assert!(err.line() > MINIMAL.lines().count(), "{lines}: {err}");
    }
}
