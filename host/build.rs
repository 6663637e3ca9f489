//! Takes the files the Swagger UI page loads out of the Swagger UI release that
//! `utoipa-swagger-ui-vendored` carries (no download), into `OUT_DIR/swagger-ui/`, for
//! `triggers/http/docs.rs` to build into the binary. The release holds 11 MB of bundles for other
//! uses and source maps besides the 1.9 MB the page needs; only those are kept.

use std::io::Read;
use std::path::Path;

/// The files of the release's `dist/` folder the page loads (its initializer is the host's own).
const PAGE_FILES: [&str; 7] = [
    "index.html",
    "index.css",
    "swagger-ui.css",
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "favicon-32x32.png",
    "favicon-16x16.png",
];

fn main() {
    let out = std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR");
    let folder = Path::new(&out).join("swagger-ui");
    std::fs::create_dir_all(&folder).expect("the assets' folder");
    let release = std::io::Cursor::new(utoipa_swagger_ui_vendored::SWAGGER_UI_VENDORED);
    let mut archive = zip::ZipArchive::new(release).expect("the vendored Swagger UI release");
    let mut found = 0;
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).expect("an entry of the release");
        let Some(name) = entry
            .name()
            .split_once("/dist/")
            .map(|(_, name)| name.to_owned())
        else {
            continue;
        };
        if !PAGE_FILES.contains(&name.as_str()) {
            continue;
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("an asset");
        std::fs::write(folder.join(&name), bytes).expect("an asset written");
        found += 1;
    }
    assert_eq!(
        found,
        PAGE_FILES.len(),
        "the release lacks a file the page loads"
    );
    println!("cargo:rerun-if-changed=build.rs");
}
