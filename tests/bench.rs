//! `sbx bench`: a workload under both isolation levels, as a table, as
//! JSON, and as an SVG chart. Needs root, the guest kernel and QEMU (the
//! vm isolation level), as tests/vm_run.rs does.

mod common;

use common::{stderr, stdout, TestRoot};

#[test]
fn table_and_svg_for_both_isolation_levels() {
    let root = TestRoot::new();
    let svg = root.path().join("bench.svg");
    let out = root.sbx(&[
        "bench",
        "-n",
        "3",
        "--svg",
        svg.to_str().unwrap(),
        "busybox",
        "true",
    ]);
    let (text, err) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "sbx bench failed: {err}");
    for header in ["ISOLATION", "P50", "P95", "MAX RSS"] {
        assert!(text.contains(header), "no {header} column in:\n{text}");
    }
    let row = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in:\n{text}"))
            .to_string()
    };
    for name in ["container", "vm"] {
        let line = row(name);
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[1], "3", "{name} row should count 3 runs: {fields:?}");
        assert_eq!(fields.last(), Some(&"0"), "{name}: `true` exits 0");
    }
    assert!(
        text.contains("vm boot (p50"),
        "no VM boot phases in:\n{text}"
    );
    assert!(text.contains("vm/container:"), "no ratio in:\n{text}");

    let body = std::fs::read_to_string(&svg).expect("the SVG was written");
    let doc = roxmltree::Document::parse(&body).expect("the SVG parses as XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    for name in ["container", "vm"] {
        assert!(
            texts.contains(&name),
            "no {name} label in the SVG: {texts:?}"
        );
    }
    assert!(
        texts.iter().any(|t| t.starts_with("container p50")),
        "no p50 figure in the SVG: {texts:?}"
    );
}

#[test]
fn json_output_parses() {
    let root = TestRoot::new();
    let out = root.sbx(&[
        "bench",
        "--isolation",
        "container",
        "-n",
        "2",
        "--json",
        "busybox",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert!(out.status.success(), "sbx bench failed: {}", stderr(&out));
    let doc: serde_json::Value =
        serde_json::from_str(&stdout(&out)).expect("--json prints one JSON document");
    let series = doc["series"].as_array().expect("a series array");
    assert_eq!(series.len(), 1);
    assert_eq!(series[0]["isolation"], "container");
    let runs = series[0]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs
        .iter()
        .all(|r| r["exit_code"] == 3 && r["ms"].as_f64() > Some(0.0)));
    assert!(series[0]["p50_ms"].as_f64() > Some(0.0));
    assert!(doc["vm_over_container_p50"].is_null());
}

#[test]
fn bad_input_is_one_line() {
    let root = TestRoot::new();
    let out = root.sbx(&["bench", "-n", "0", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("-n 0"), "{}", stderr(&out));
    let out = root.sbx(&["bench", "-n", "1", "no-such-image", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}
