//! The README's architecture diagram: `docs/architecture.svg` is rendered from
//! `docs/architecture.dot` by `scripts/diagram`, and stamped with the SHA-256 of both.
//! `scripts/diagram --check` (Python's standard library; no Graphviz needed) fails when the
//! source changed after the last rendering or the SVG was edited by hand.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::TestDir;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn check(root: &Path) -> Output {
    Command::new("python3")
        .arg(root.join("scripts/diagram"))
        .arg("--check")
        .output()
        .expect("running python3 scripts/diagram --check (is python3 installed?)")
}

#[test]
fn the_committed_svg_is_rendered_from_the_committed_source() {
    let output = check(root());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let svg = fs::read_to_string(root().join("docs/architecture.svg")).unwrap();
    for layer in ["reactor/", "bus/", "rpc/", "socket/", "worker/", "daemon/"] {
        assert!(svg.contains(&format!(">{layer}</text>")), "{layer} missing");
    }
    for event in [
        "PosixEvent",
        "RpcEvent",
        "CallEvent",
        "SocketEvent",
        "WorkerExited",
        "WorkerMessage",
    ] {
        assert!(svg.contains(event), "{event} missing");
    }
}

/// A copy of the script, the source and the SVG, in a tree of their own.
fn copy(dir: &TestDir) -> PathBuf {
    let copy = dir.join("tree");
    for path in [
        "scripts/diagram",
        "docs/architecture.dot",
        "docs/architecture.svg",
    ] {
        let to = copy.join(path);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(root().join(path), to).unwrap();
    }
    assert!(check(&copy).status.success(), "the copy checks");
    copy
}

#[test]
fn an_edited_source_or_svg_fails_the_check() {
    let dir = TestDir::new();
    let tree = copy(&dir);
    let dot = tree.join("docs/architecture.dot");
    let text = fs::read_to_string(&dot).unwrap();
    fs::write(&dot, text.replace("dispatch", "dispatches")).unwrap();
    let output = check(&tree);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("older than docs/architecture.dot"));

    let dir = TestDir::new();
    let tree = copy(&dir);
    let svg = tree.join("docs/architecture.svg");
    let text = fs::read_to_string(&svg).unwrap();
    fs::write(&svg, text.replace(">bus/<", ">Bus/<")).unwrap();
    let output = check(&tree);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("edited by hand"));
}
