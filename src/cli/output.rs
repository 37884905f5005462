//! How the CLI shows things: JSON on stdout, tables and details for people, warnings and
//! progress bars on stderr (bars only on a terminal, never with `--json`).

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::cas::Progress;
use crate::runs::manifest::Manifest;
use crate::units::human_size;

pub fn print_json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("warning: could not print the result as JSON: {e}"),
    }
}

pub fn warn_all(problems: &[String]) {
    for p in problems {
        eprintln!("warning: {p}");
    }
}

/// A byte-counting progress bar on stderr, hidden when stderr is not a terminal.
pub struct Bar(ProgressBar);

impl Bar {
    /// Whether a bar would be shown at all: callers skip work done only to size one.
    pub fn wanted(quiet: bool) -> bool {
        !quiet && std::io::stderr().is_terminal()
    }

    pub fn new(total: u64, quiet: bool, verb: &str) -> Self {
        if !Bar::wanted(quiet) || total < 64 * 1024 * 1024 {
            return Bar(ProgressBar::hidden());
        }
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(verb.to_string());
        Bar(bar)
    }

    pub fn progress(&self) -> Progress {
        let bar = self.0.clone();
        Arc::new(move |n| bar.inc(n))
    }

    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

pub fn run_table(runs: &[&Manifest]) {
    println!(
        "{:<24} {:<12} {:<20} {:<16} {:<20} {:>5}",
        "RUN", "TYPE", "PROJECT", "MODEL", "CREATED", "FILES"
    );
    for m in runs {
        println!(
            "{:<24} {:<12} {:<20} {:<16} {:<20} {:>5}",
            m.run_id.as_str(),
            m.run_type.as_str(),
            m.project.as_ref().map_or("-", |p| p.as_str()),
            m.model.as_ref().map_or("-", |p| p.as_str()),
            m.created_at.format("%Y-%m-%d %H:%M:%S"),
            m.files.len()
        );
    }
}

pub fn run_details(m: &Manifest) -> std::io::Result<()> {
    println!("run        {}", m.run_id);
    println!("type       {}", m.run_type);
    println!(
        "project    {}",
        m.project.as_ref().map_or("-", |p| p.as_str())
    );
    println!(
        "model      {}",
        m.model.as_ref().map_or("-", |p| p.as_str())
    );
    println!("created    {}", crate::time::format(&m.created_at));
    println!("updated    {}", crate::time::format(&m.updated_at));
    for mode in &m.storage_modes {
        let dir = m
            .view_pointer_key(*mode)
            .map(|k| k.trim_end_matches("/run.json").to_string())
            .unwrap_or_default();
        println!("view       {mode:<10} {dir}/");
    }
    for (k, v) in &m.tags {
        println!("tag        {k}={v}");
    }
    println!(
        "files      {} ({})",
        m.files.len(),
        human_size(m.referenced_bytes())
    );
    for (path, f) in &m.files {
        println!(
            "  {:<40} {:>12} {:<8} {}",
            path.as_str(),
            f.size,
            f.format.as_str(),
            f.hash
        );
    }
    if !m.links.is_empty() {
        println!("links      {}", m.links.len());
        for (path, l) in &m.links {
            println!("  {:<40} -> {}", path.as_str(), l.target);
        }
    }
    Ok(())
}
