//! The web app in a real browser: the Playwright tests of web/e2e (web/node_modules'
//! @playwright/test driving Debian's Chromium; Playwright's own browser download is never
//! used) against a platform of their own — the three services, batch admitting, the gateway
//! serving the built app (web/dist) at / in front of them.
//!
//! `deploy/local/test.sh` prepares what they need (`npm ci --ignore-scripts` and
//! `npm run build` in web/, the `chromium` package). Without any of it this test fails and
//! says what to run: a browser suite that silently does not run is no check. The screenshots
//! the specs take are test output, in web/test-results/screenshots (git-ignored).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use e2e::platform::{ADMIN_PASSWORD, ADMIN_USERNAME};
use e2e::process::binary;
use e2e::{Gateway, Platform, repo_root};

#[tokio::test]
async fn the_web_app_passes_its_browser_tests() {
    let web = repo_root().join("web");
    let chromium = PathBuf::from(
        std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    let playwright = web.join("node_modules/.bin/playwright");
    let missing = missing_prerequisites(&web, &playwright, &chromium);
    assert!(
        missing.is_empty(),
        "the browser tests cannot run (deploy/local/test.sh prepares all of this):\n  - {}",
        missing.join("\n  - ")
    );

    // Holds of 60 s, not production's 300 s, so that a spec can watch one run out in the page
    // (fan.spec.ts, "a hold that runs out…"), and a grace of 5 s instead of 30 after it, so
    // its seat is free again soon after. 60 s still leaves the specs that pay a wide margin:
    // their fans pay 5–10 s after holding, and payment-api refuses only a hold's last 10 s
    // (PAYMENT_CUTOFF_SECS), so a machine several times slower still pays in time. Every
    // process gets them: concert-api and batch read them, and the load tool that a spec runs
    // is given the platform's environment.
    let platform = Platform::start_with(&[
        ("RESERVATION_HOLD_SECS", "60"),
        ("RESERVATION_GRACE_SECS", "5"),
    ])
    .await;
    // Admission within a fraction of a second (users-api's status streams look every second):
    // a fan on a page waits for ACTIVE as a person would, just not for long.
    let _batch = platform
        .start_batch(&[("QUEUE_ADMIT_INTERVAL_MS", "200")])
        .await;
    // Every browser and every setup call of the specs comes from one address; the
    // per-session limits (streams, holds) stay as in production.
    let gateway = Gateway::start_for_one_address(&platform, 10_000, &[]).await;
    platform.create_admin();

    // Screenshots of earlier runs would be listed as this run's.
    let screenshots = web.join("test-results/screenshots");
    let _ = std::fs::remove_dir_all(&screenshots);
    // The platform's environment too: a spec that runs the load tool (LOADTEST_BIN) reaches
    // this platform's databases, Redis prefix and topics with it.
    let out = tokio::process::Command::new(&playwright)
        .args(["test", "--forbid-only"])
        .current_dir(&web)
        .envs(platform.env())
        .env("WEB_BASE_URL", &gateway.url)
        .env("WEB_ADMIN_USERNAME", ADMIN_USERNAME)
        .env("WEB_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("LOADTEST_BIN", binary("loadtest"))
        .env("CHROMIUM_PATH", &chromium)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {}: {e}", playwright.display()));
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    let mut taken: Vec<String> = std::fs::read_dir(&screenshots)
        .map(|dir| {
            dir.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    taken.sort();
    println!(
        "screenshots: {} ({} files: {})",
        screenshots.display(),
        taken.len(),
        taken.join(", ")
    );
    println!(
        "failures' screenshots and traces, if any: {}",
        web.join("test-results/artifacts").display()
    );
    assert!(
        out.status.success(),
        "playwright test failed ({}): its output is above",
        out.status
    );
}

/// What the browser tests need that is not there, each with how to get it.
fn missing_prerequisites(web: &Path, playwright: &Path, chromium: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if !playwright.exists() {
        missing.push(format!(
            "{} (the web app's dependencies): cd web && npm ci --ignore-scripts",
            playwright.display()
        ));
    }
    let built = web.join("dist/index.html");
    match modified(&built) {
        None => missing.push(format!(
            "{} (the built app the gateway serves): cd web && npm run build",
            built.display()
        )),
        Some(at) => {
            if let Some(newer) = newer_source(web, at) {
                missing.push(format!(
                    "a build of the current sources: {} changed after web/dist was built: cd web && npm run build",
                    newer.display()
                ));
            }
        }
    }
    if !chromium.exists() {
        missing.push(format!(
            "{} (the browser): apt-get install -y chromium (deploy/local/test.sh installs it), or set CHROMIUM_PATH",
            chromium.display()
        ));
    }
    missing
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).ok()?.modified().ok()
}

/// A source of the app changed after `built` (web/src, index.html, the build's configuration
/// and lock file), if any. The API types (src/api/schema.d.ts) are left out: `npm run
/// typecheck` rewrites them from docs/openapi.json without any change to the app.
fn newer_source(web: &Path, built: SystemTime) -> Option<PathBuf> {
    let mut pending = vec![web.join("src")];
    let mut files: Vec<PathBuf> = ["index.html", "vite.config.ts", "package-lock.json"]
        .iter()
        .map(|f| web.join(f))
        .collect();
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if !path.ends_with("src/api/schema.d.ts") {
                files.push(path);
            }
        }
    }
    files
        .into_iter()
        .find(|f| modified(f).is_some_and(|at| at > built))
}
