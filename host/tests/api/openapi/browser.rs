//! The docs pages in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `./test.sh`) loads `<route>/docs`, runs Swagger UI, which fetches the component's document;
//! the test reads the rendered DOM for the operations and keeps a screenshot of each page in
//! `target/artifacts/`.

use std::path::PathBuf;
use std::process::Command;

use super::{Documented, run};
use crate::helpers;

/// Headless Chromium with what it needs as root in a container, and time for the page's script.
fn chromium() -> Command {
    let mut command = Command::new("chromium");
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--virtual-time-budget=20000",
        "--window-size=1280,1800",
    ]);
    command
}

#[tokio::test]
async fn each_docs_page_renders_its_operations_in_a_real_browser() {
    let app = Documented::start().await;
    let artifacts: PathBuf = helpers::workspace().join("target/artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts folder");
    let profile = helpers::TempDir::new();
    for (route, operations) in [
        ("/orders", &["/orders", "/orders/{id}", "/health"][..]),
        ("/invoices", &["/invoices", "/invoices/{id}", "/health"][..]),
    ] {
        let page = app.host.url(&format!("{route}/docs"));
        let screenshot = artifacts.join(format!("{}-docs.png", &route[1..]));
        let _ = std::fs::remove_file(&screenshot);
        let user_data = format!("--user-data-dir={}", profile.0.display());
        let (dom, page_again, user_data_again) = (page.clone(), page.clone(), user_data.clone());
        let dom = tokio::task::spawn_blocking(move || {
            run(chromium().arg(&user_data).arg("--dump-dom").arg(&dom))
        })
        .await
        .expect("ran");
        // Swagger UI has run: one block per operation, each showing its path.
        let rendered: Vec<&str> = dom
            .split("data-path=\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();
        for operation in operations {
            assert!(
                rendered.contains(operation),
                "{route}/docs shows no {operation}; it shows {rendered:?}"
            );
        }
        assert!(
            dom.contains("opblock-summary-method"),
            "{route}/docs: no operation blocks rendered"
        );
        let shot = format!("--screenshot={}", screenshot.display());
        tokio::task::spawn_blocking(move || {
            run(chromium().arg(&user_data_again).arg(&shot).arg(&page_again))
        })
        .await
        .expect("ran");
        let png = std::fs::read(&screenshot).expect("screenshot written");
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 20_000,
            "{route}: a blank screenshot ({} bytes)",
            png.len()
        );
    }
    app.host.stop().await.expect("stops");
}
