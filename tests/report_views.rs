//! Plots, `harness compare` and `report.html`, on real result directories: a fixed
//! calibration sweep kept in `tests/fixtures/result-sweep` (batch 1, 2, 4, 8; three
//! rounds each with 20 % seeded jitter) and sweeps made here.

mod common;
use common::{fails, harness};
use std::path::{Path, PathBuf};

/// A copy of the fixed sweep in a temporary directory (plots are written beside it).
fn fixture(tmp: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/result-sweep");
    let dir = tmp.join("sweep");
    std::fs::create_dir(&dir).unwrap();
    for f in ["run.json", "requests.jsonl", "config.toml"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    dir
}

/// PNG width and height from the IHDR chunk.
fn png_size(p: &Path) -> (u32, u32) {
    let b = std::fs::read(p).unwrap();
    assert_eq!(
        &b[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        p.display()
    );
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

/// The text of every `<text>` element of an SVG.
fn texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = t.split_once('>')?.1;
            Some(body.split("</text>").next()?.trim().to_string())
        })
        .collect()
}

/// True when plotting can run here; prints why not otherwise. CI installs a font, so
/// there (CI=true) a missing font fails instead.
fn can_plot(stderr: &str) -> bool {
    if stderr.contains("no font for plot text") {
        assert!(
            std::env::var("CI").is_err(),
            "CI must install a font: {stderr}"
        );
        eprintln!("skipped: {stderr}");
        return false;
    }
    true
}

#[test]
fn plots_of_a_fixed_result_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture(tmp.path());
    let o = harness().arg("plot").arg(&dir).output().unwrap();
    if !can_plot(&String::from_utf8_lossy(&o.stderr)) {
        return;
    }
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plots = dir.join("plots");
    // Legend strip: 14 px + 20 px per run above each plot.
    for (name, size) in [
        ("throughput", (1000, 654)),
        ("latency", (1500, 554)),
        ("latency_throughput", (1000, 654)),
        ("scaling", (1000, 654)),
    ] {
        assert_eq!(png_size(&plots.join(format!("{name}.png"))), size, "{name}");
        let svg = std::fs::read_to_string(plots.join(format!("{name}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") || svg.contains("<svg"), "{name}");
        // The legend names engine, version, model and host.
        assert!(
            svg.contains("calibration 0.1.0 · none (synthetic schedule) · vm"),
            "{name}: legend missing"
        );
    }
    let svg = |n: &str| std::fs::read_to_string(plots.join(format!("{n}.svg"))).unwrap();
    let t = svg("throughput");
    assert!(t.contains("batch size (requests per batch)"));
    assert!(t.contains("output throughput (tokens/s)"));
    // Batches double: a log₂ axis ticked at each power of two, and nothing between.
    let texts = texts(&t);
    for tick in ["1", "2", "4", "8"] {
        assert!(texts.iter().any(|x| x == tick), "tick {tick}: {texts:?}");
    }
    assert!(!texts.iter().any(|x| x == "3" || x == "1.41"), "{texts:?}");
    let l = svg("latency");
    for label in [
        "time to first token (ms)",
        "time per output token (ms)",
        "inter-token latency (ms)",
        "p50 solid, p99 dashed",
    ] {
        assert!(l.contains(label), "{label}");
    }
    let lt = svg("latency_throughput");
    assert!(lt.contains("total output throughput (tokens/s)"));
    assert!(
        lt.contains("batch=8"),
        "points are labelled with their load"
    );
    assert!(svg("scaling").contains("efficiency (%)"));
    // No telemetry in this run, so no telemetry plots.
    assert!(!plots.join("gpu_power_w.svg").exists());
}

/// A calibration sweep with a given decode step; returns its directory.
fn sweep(tmp: &Path, name: &str, decode_ms: &str, input_len: &str) -> PathBuf {
    let out = tmp.join(name);
    harness()
        .args(["sweep", "--engine", "calibration", "--batch", "1,4"])
        .args([
            "--input-len",
            input_len,
            "--output-len",
            "6",
            "--warmup",
            "0",
        ])
        .args(["--min-rounds", "4", "--min-duration", "0", "--no-progress"])
        .args(["--engine-arg", &format!("decode_ms={decode_ms}")])
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    out
}

#[test]
fn compare_two_runs_and_refuse_different_workloads() {
    let tmp = tempfile::tempdir().unwrap();
    let fast = sweep(tmp.path(), "fast", "5", "16");
    let slow = sweep(tmp.path(), "slow", "10", "16");
    let out = tmp.path().join("cmp");
    let o = harness()
        .arg("compare")
        .arg(&fast)
        .arg(&slow)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Same engine and version twice: the run labels carry the directories.
    assert!(
        text.contains("calibration 0.1.0 (fast)") && text.contains("calibration 0.1.0 (slow)"),
        "{text}"
    );
    // A decode step twice as long: TPOT about ×2 and beyond the (tiny) spread.
    let row = text
        .lines()
        .find(|l| l.contains("batch=4") && l.contains("(slow)"))
        .unwrap();
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    // 10.4 ms vs 5.4 ms per decode step: ×1.93 by schedule; the harness's wakeup
    // latency on a busy machine moves it by a few percent.
    let tpot_vs = cells[cells.len() - 2];
    let ratio: f64 = tpot_vs
        .trim_start_matches('×')
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1.7..=2.2).contains(&ratio), "{row}");
    assert!(tpot_vs.ends_with("beyond spread"), "{row}");
    assert!(out.join("compare.html").is_file());
    if can_plot(&String::from_utf8_lossy(&o.stderr).replace("warning: no plots: ", "")) {
        assert!(out.join("throughput.svg").is_file());
        let html = std::fs::read_to_string(out.join("compare.html")).unwrap();
        assert!(html.contains("<figure id=\"throughput\"><svg"));
        assert!(html.contains("beyond spread"));
    }

    // Another input length is another workload: refused, exit 2, one line.
    let other = sweep(tmp.path(), "other", "5", "32");
    let err = fails(harness().arg("compare").arg(&fast).arg(&other), 2);
    assert!(
        err.starts_with("Error: other ran another workload than fast")
            && err.contains("--input-len"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn report_html_is_self_contained_with_plots() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture(tmp.path());
    let o = harness().arg("report").arg(&dir).output().unwrap();
    assert!(o.status.success());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&format!("report: {}", dir.join("report.html").display())),
        "{stdout}"
    );
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("CALIBRATION INSTRUMENT"));
    assert!(html.contains("<td class=\"l\">batch=8</td>"));
    assert!(
        html.contains("<dt>output_throughput_rounds</dt>") && html.contains("<dt>host_load</dt>")
    );
    for needle in ["<script", "<link", " src=", "url(", "@import"] {
        assert!(!html.contains(needle), "fetches something: {needle}");
    }
    if can_plot(
        &String::from_utf8_lossy(&o.stderr).replace("warning: no plots in the report: ", ""),
    ) {
        assert_eq!(html.matches("<figure id=").count(), 4, "four plots inline");
    }
    chromium_opens(&dir.join("report.html"), tmp.path());
}

/// Opens the page in headless Chromium (Debian's `chromium`), when it is installed:
/// no console error, and a screenshot is written.
fn chromium_opens(page: &Path, tmp: &Path) {
    let Some(chromium) = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    else {
        eprintln!("skipped the Chromium check: no chromium here (apt-get install chromium)");
        return;
    };
    let shot = tmp.join("report.png");
    let o = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1500,2400",
        ])
        .arg(format!("--user-data-dir={}", tmp.join("chrome").display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(console.is_empty(), "console errors: {console:?}");
    assert!(shot.is_file(), "no screenshot: {log}");
    assert!(png_size(&shot).0 >= 1000);
}
