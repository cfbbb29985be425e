//! `scripts/charts`, the benchmark charts: run on `tests/fixtures/bench-results.json` (every
//! kind of row the harness writes, scale rows at several sizes, and odd rows), its SVGs parse
//! as XML (Python's `xml.etree`, the script's own interpreter), hold the figures and bars
//! expected, come out byte for byte the same on a second run, and the odd rows are left out
//! with a note instead of failing. Then the charts BENCHMARKS.md shows are the committed ones.
//!
//! Needs `python3` (the standard library only); no network, no daemon.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::TestDir;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture() -> PathBuf {
    root().join("tests/fixtures/bench-results.json")
}

/// `scripts/charts IN OUT --run test`, which must succeed.
fn charts(input: &Path, out: &Path) -> Output {
    let output = Command::new("python3")
        .arg(root().join("scripts/charts"))
        .args([input, out])
        .args(["--run", "test"])
        .output()
        .expect("running python3 scripts/charts (is python3 installed?)");
    assert!(
        output.status.success(),
        "scripts/charts failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The SVG files in `dir`, sorted by name.
fn svgs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("reading the output dir")
        .map(|e| {
            e.expect("a dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".svg"))
        .collect();
    names.sort();
    names
}

/// Parses every file with Python's `xml.etree` and checks the root is an `<svg>`.
fn assert_xml(paths: &[PathBuf]) {
    let script = "import sys, xml.etree.ElementTree as E\n\
                  for p in sys.argv[1:]:\n\
                  \x20   tag = E.parse(p).getroot().tag\n\
                  \x20   assert tag == '{http://www.w3.org/2000/svg}svg', (p, tag)\n";
    let output = Command::new("python3")
        .args(["-c", script])
        .args(paths)
        .output()
        .expect("running python3");
    assert!(
        output.status.success(),
        "not well-formed SVG: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

#[test]
fn the_fixture_gives_floor_charts_and_scale_curves() {
    let dir = TestDir::new();
    let out = dir.join("charts");
    let output = charts(&fixture(), &out);
    assert_eq!(
        svgs(&out),
        [
            "floors-kib.svg",
            "floors-ms.svg",
            "floors-none.svg",
            "floors-rates.svg",
            "floors-us.svg",
            "scale-connections.svg",
            "scale-workers.svg",
        ]
    );
    let paths: Vec<PathBuf> = svgs(&out).iter().map(|n| out.join(n)).collect();
    assert_xml(&paths);

    // One group per figure with a floor: a value bar, a floor bar and the ratio.
    let us = read(&out, "floors-us.svg");
    for name in ["channel_rtt_p50_us", "rpc_unix_json_p50_us"] {
        assert!(
            us.contains(&format!("data-name=\"{name}\"")),
            "{name} in floors-us"
        );
    }
    assert_eq!(us.matches("<rect class=\"value\"").count(), 2);
    assert_eq!(us.matches("<rect class=\"floor\"").count(), 2);
    assert!(us.contains(">1.03×</text>") && us.contains(">1.48×</text>"));
    let rates = read(&out, "floors-rates.svg");
    assert!(rates.contains("data-name=\"channel_bytes_per_s_4k\""));
    assert!(rates.contains("data-name=\"event_fanout_10_per_s\""));
    assert!(rates.contains("log scale"));
    assert!(rates.contains("3.5 GB/s"), "bytes per second read as GB/s");
    assert!(read(&out, "floors-ms.svg").contains(">2.74×</text>"));
    let kib = read(&out, "floors-kib.svg");
    assert!(kib.contains("data-name=\"hostile_peak_rss_kib\""));
    assert!(kib.contains(">10 MiB</text>"), "KiB axes tick in MiB");
    // Scale rows with a floor are figures with a floor too.
    assert!(kib.contains("data-name=\"connections_10000_rss_kib\""));
    // Figures without a floor are not in the floor charts.
    assert!(!kib.contains("\"daemon_rss_kib\""));

    // A curve per <what> with two sizes or more, its points, its slope.
    let workers = read(&out, "scale-workers.svg");
    assert!(workers.contains("data-name=\"workers_N_spawn_ms\""));
    assert!(workers.contains("data-name=\"workers_N_daemon_rss_kib\""));
    assert_eq!(workers.matches("<circle class=\"point\"").count(), 6);
    assert!(workers.contains("slope: 5.45 KiB per worker"), "{workers}");
    // One size only: named in the footnote, not drawn.
    assert!(!workers.contains("data-name=\"workers_N_stop_ms\""));
    assert!(workers.contains("One size only, no curve: stop_ms (N = 10,000)"));
    let connections = read(&out, "scale-connections.svg");
    assert!(connections.contains("data-name=\"connections_N_rss_kib\""));
    assert!(connections.contains("<polyline class=\"floor\""));
    assert!(connections.contains("N, idle connections"));

    // The odd rows: left out, each with a note, and the run still succeeded.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let all: String = paths
        .iter()
        .map(|p| fs::read_to_string(p).unwrap())
        .collect();
    for odd in ["odd_null_value", "odd_nan_value", "odd_zero_rate_per_s"] {
        assert!(!all.contains(odd), "{odd} is charted");
        assert!(stderr.contains(odd), "no note for {odd}: {stderr}");
    }
    // A floor that is zero or not a number: the figure has no floor, and a note says so.
    for odd in ["odd_zero_floor_us", "odd_string_floor_us"] {
        assert!(!all.contains(odd), "{odd} is charted beside a floor");
        assert!(stderr.contains(&format!("{odd}: floor")), "{stderr}");
    }
    assert!(stderr.contains("row 23: not a"), "{stderr}");
}

#[test]
fn the_same_results_give_the_same_bytes() {
    let dir = TestDir::new();
    let (a, b) = (dir.join("a"), dir.join("b"));
    charts(&fixture(), &a);
    charts(&fixture(), &b);
    let names = svgs(&a);
    assert!(!names.is_empty());
    assert_eq!(names, svgs(&b));
    for name in &names {
        assert!(
            fs::read(a.join(name)).unwrap() == fs::read(b.join(name)).unwrap(),
            "{name} differs between two runs"
        );
    }
}

#[test]
fn stale_charts_go_and_other_files_stay() {
    let dir = TestDir::new();
    let out = dir.join("charts");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("floors-gone.svg"), "<svg/>").unwrap();
    fs::write(out.join("keep.txt"), "mine").unwrap();
    charts(&fixture(), &out);
    assert!(!out.join("floors-gone.svg").exists());
    assert_eq!(fs::read_to_string(out.join("keep.txt")).unwrap(), "mine");

    // With one size per scale figure, the scale chart says so instead of drawing.
    let one = dir.join("one.json");
    fs::write(
        &one,
        r#"[{"name": "workers_1000_spawn_ms", "value": 552.9, "unit": "ms", "baseline": null}]"#,
    )
    .unwrap();
    charts(&one, &out);
    assert_eq!(svgs(&out), ["scale-workers.svg"]);
    let workers = read(&out, "scale-workers.svg");
    assert!(workers.contains("no figure measured at two sizes yet"));
    assert!(!workers.contains("<polyline"));
    assert_xml(&[out.join("scale-workers.svg")]);
}

#[test]
fn unreadable_results_fail_and_touch_nothing() {
    let dir = TestDir::new();
    let out = dir.join("charts");
    for (name, text) in [
        ("missing.json", None),
        ("bad.json", Some("{\"name\": ")),
        ("obj.json", Some("{}")),
    ] {
        let input = dir.join(name);
        if let Some(text) = text {
            fs::write(&input, text).unwrap();
        }
        let output = Command::new("python3")
            .arg(root().join("scripts/charts"))
            .args([&input, &out])
            .output()
            .expect("running python3 scripts/charts");
        assert_eq!(output.status.code(), Some(1), "{name}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read"));
        assert!(!out.exists(), "{name}: the output dir was made");
    }
}

#[test]
fn the_docs_show_committed_pictures() {
    let benchmarks = fs::read_to_string(root().join("BENCHMARKS.md")).unwrap();
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    let mut shown = Vec::new();
    for text in [&benchmarks, &readme] {
        for part in text.split("](").skip(1) {
            let target = part.split(')').next().unwrap();
            if target.ends_with(".svg") {
                shown.push(root().join(target));
            }
        }
    }
    assert!(
        shown
            .iter()
            .any(|p| p.ends_with("docs/bench/floors-us.svg")),
        "{shown:?}"
    );
    assert!(
        shown
            .iter()
            .any(|p| p.ends_with("docs/bench/scale-workers.svg")),
        "{shown:?}"
    );
    assert!(
        shown.iter().any(|p| p.ends_with("docs/architecture.svg")),
        "{shown:?}"
    );
    for path in &shown {
        assert!(path.is_file(), "{} is shown but missing", path.display());
    }
    assert_xml(&shown);
}
