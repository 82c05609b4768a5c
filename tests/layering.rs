//! The import graph of `src/` points one way (ARCHITECTURE.md, "The flow"): a module may use only
//! the modules of its own layer group or of the layers below it. Every `crate::name` a module's
//! code names (comments and `#[cfg(test)]` modules aside) is checked against the table below, so
//! an arrow that points up fails here with the file and the line. `LAYERS` is also the picture:
//! `cargo test --test layering -- --nocapture` prints the graph as Mermaid.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. Modules in one row may use each other (the `Backend` trait and the ops it
/// composes are one group).
const LAYERS: &[&[&str]] = &[
    &["sampler"],
    &["error"],
    &[
        "device", "noise", "io", "image", "history", "defaults", "export",
    ],
    &["backend", "ops"],
    &["cpu", "gpu", "selftest"],
    &["model"],
    &["latent", "pipeline", "toy2d"],
    &["edit"],
    &["job"],
    &["lab"],
    &["app"],
];

/// The module a `crate::name` is in: the crate root re-exports `Error`, `Result` (from `error`),
/// `Backend` and `Tensor` (from `backend`).
fn module_of(name: &str) -> &str {
    match name {
        "Error" | "Result" => "error",
        "Backend" | "Tensor" => "backend",
        other => other,
    }
}

fn layer(name: &str) -> Option<usize> {
    LAYERS.iter().position(|row| row.contains(&module_of(name)))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without comments and without its `#[cfg(test)]` module(s) (a test may
/// build whatever backend it checks against).
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut skip_depth: Option<i64> = None;
    let mut depth = 0i64;
    let mut pending_test = false;
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let opens = code.matches('{').count() as i64;
        let closes = code.matches('}').count() as i64;
        if code.trim_start().starts_with("#[cfg(test)]") {
            pending_test = true;
            continue;
        }
        if pending_test && skip_depth.is_none() && code.contains("mod ") {
            skip_depth = Some(depth);
            pending_test = false;
        }
        depth += opens - closes;
        if let Some(d) = skip_depth {
            if depth <= d && closes > 0 {
                skip_depth = None;
            }
            continue;
        }
        out.push((i + 1, code.to_string()));
    }
    out
}

/// `crate::name` references of one line.
fn crate_refs(code: &str) -> Vec<String> {
    let mut refs = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let tail = &rest[at + "crate::".len()..];
        let name: String = tail
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            refs.push(name);
        }
        rest = tail;
    }
    refs
}

#[test]
fn no_import_points_up() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut violations = Vec::new();
    let mut unplaced = BTreeSet::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if matches!(module.as_str(), "bin" | "main" | "lib") {
            continue; // the CLI and the wasm entry sit on top of everything
        }
        let Some(from) = layer(&module) else {
            unplaced.insert(module);
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for (line, code) in code_lines(&text) {
            for to in crate_refs(&code) {
                let to = module_of(&to).to_string();
                if to == module {
                    continue;
                }
                graph.entry(module.clone()).or_default().insert(to.clone());
                match layer(&to) {
                    None => {
                        unplaced.insert(to);
                    }
                    Some(l) if l > from => violations.push(format!(
                        "{}:{line}: `{module}` (layer {from}) uses `crate::{to}` (layer {l})",
                        rel.display()
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    println!("graph TD");
    for (from, tos) in &graph {
        for to in tos {
            println!("  {from} --> {to}");
        }
    }
    assert!(
        unplaced.is_empty(),
        "modules missing from LAYERS: {unplaced:?}"
    );
    assert!(
        violations.is_empty(),
        "imports that point up:\n{}",
        violations.join("\n")
    );
    // The flow the architecture promises, not only the absence of cycles.
    for (from, to) in [
        ("app", "job"),
        ("app", "lab"),
        ("lab", "job"),
        ("job", "pipeline"),
        ("pipeline", "model"),
        ("model", "backend"),
        ("cpu", "ops"),
        ("ops", "device"),
    ] {
        assert!(
            graph.get(from).is_some_and(|t| t.contains(to)),
            "expected `{from}` to use `{to}`"
        );
    }
}

#[test]
fn the_checker_sees_an_upward_import() {
    let text = "use crate::app::engine;\n// crate::job in a comment\n#[cfg(test)]\nmod tests {\n    use crate::job::Job;\n}\n";
    let lines = code_lines(text);
    let refs: Vec<String> = lines.iter().flat_map(|(_, c)| crate_refs(c)).collect();
    assert_eq!(refs, ["app"]);
    assert!(layer("app").unwrap() > layer("ops").unwrap());
}
