//! `waymark dashboard` in a real browser: Debian's headless Chromium, driven through WebDriver
//! (`chromedriver`) with plain HTTP JSON calls, against the dashboard served from the suite's
//! kubeconfig on a free loopback port. Without the browser the walk is skipped, and fails in CI.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::control_plane::{die_with_parent, stop};
use crate::fixtures::*;
use crate::support::{Env, eventually, eventually_within, in_ci, kubeconfig_path};
use waymark::api::{ManualAction, Phase};
use waymark::cli::KubeArgs;
use waymark::cli::dashboard::{self, DashboardArgs};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process of the walk's own, stopped when dropped.
struct Driver {
    process: Child,
    url: String,
}

impl Drop for Driver {
    /// Stops chromedriver and the browsers it started: they share its process group, so a walk
    /// that failed before closing its session leaves no Chromium behind.
    fn drop(&mut self) {
        let group = i32::try_from(self.process.id()).ok();
        stop(&mut self.process, Duration::from_secs(5));
        if let Some(group) = group {
            // SAFETY: kill(2) on the process group of a child this walk started.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
    }
}

/// A free loopback port: bound, read and released (chromedriver binds it again at once).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    listener.local_addr().expect("its address").port()
}

async fn start_driver() -> Driver {
    let port = free_port();
    let mut command = Command::new(CHROMEDRIVER);
    command
        .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    die_with_parent(&mut command);
    let process = command
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {CHROMEDRIVER}: {error}"));
    let driver = Driver {
        process,
        url: format!("http://127.0.0.1:{port}"),
    };
    eventually_within(
        Duration::from_secs(20),
        "chromedriver to be ready",
        || async {
            let status = webdriver(&driver, reqwest::Method::GET, "/status", None).await?;
            match status["ready"].as_bool() {
                Some(true) => Ok(()),
                _ => Err(format!("{status}")),
            }
        },
    )
    .await;
    driver
}

/// One WebDriver command: its `value`, or what went wrong.
async fn webdriver(
    driver: &Driver,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", driver.url))
        .timeout(Duration::from_secs(60));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.map_err(|error| error.to_string())?;
    let code = response.status();
    let text = response.text().await.map_err(|error| error.to_string())?;
    let answer: Value = serde_json::from_str(&text).map_err(|error| format!("{error}: {text}"))?;
    if code.is_success() {
        Ok(answer["value"].clone())
    } else {
        Err(format!("{path} answered {code}: {}", answer["value"]))
    }
}

/// A headless Chromium session in a fresh profile, with its background traffic off (the
/// machine's network is closed: only loopback is reached).
async fn new_session(driver: &Driver, profile: &Path) -> String {
    let capabilities = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,1760",
                format!("--user-data-dir={}", profile.display()),
            ]
        }
    }}});
    let session = webdriver(
        driver,
        reqwest::Method::POST,
        "/session",
        Some(capabilities),
    )
    .await
    .unwrap_or_else(|error| panic!("Chromium did not start: {error}"));
    session["sessionId"]
        .as_str()
        .expect("a session id")
        .to_string()
}

/// Runs `script` in the page and returns what it returns.
async fn run_script(driver: &Driver, session: &str, script: &str) -> Result<Value, String> {
    webdriver(
        driver,
        reqwest::Method::POST,
        &format!("/session/{session}/execute/sync"),
        Some(json!({"script": script, "args": []})),
    )
    .await
}

/// WebDriver's codes for the Tab and Enter keys.
const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";

/// Presses and releases `key` on the page, as a keyboard does.
async fn press(driver: &Driver, session: &str, key: &str) {
    let actions = json!({"actions": [{
        "type": "key",
        "id": "keyboard",
        "actions": [{"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]
    }]});
    webdriver(
        driver,
        reqwest::Method::POST,
        &format!("/session/{session}/actions"),
        Some(actions),
    )
    .await
    .unwrap_or_else(|error| panic!("the key press was refused: {error}"));
}

/// Standard base64 (what WebDriver's screenshot is) to bytes.
fn from_base64(text: &str) -> Vec<u8> {
    let value = |byte: u8| match byte {
        b'A'..=b'Z' => byte - b'A',
        b'a'..=b'z' => byte - b'a' + 26,
        b'0'..=b'9' => byte - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        other => panic!("not base64: {other}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|b| *b != b'=').map(value).collect();
    let mut bytes = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let bits = chunk.iter().enumerate().fold(0u32, |bits, (index, digit)| {
            bits | u32::from(*digit) << (18 - 6 * index)
        });
        for index in 0..chunk.len().saturating_sub(1) {
            bytes.push((bits >> (16 - 8 * index)) as u8);
        }
    }
    bytes
}

/// The weight shown in the checkout Release's section, what the live region last said, and
/// the marker set before any change (gone if the page was loaded again).
const READ_PAGE: &str = r#"
const section = document.querySelector("section.release[id$='-checkout']");
const weight = section && section.querySelector(".weight");
return {
  weight: weight ? weight.textContent : null,
  current: section && section.querySelector("tr[aria-current='step']")
    ? section.querySelector("tr[aria-current='step']").textContent : null,
  live: document.getElementById("live-status").textContent,
  marker: window.waymarkUnreloaded || null,
};
"#;

/// Waits until the open page shows the checkout canary at `weight`; returns what it read.
async fn page_shows_weight(driver: &Driver, browser: &str, weight: i32) -> Value {
    let wanted = format!("{weight}% of traffic");
    eventually(
        &format!("the page to show the canary at {weight}%"),
        || async {
            let seen = run_script(driver, browser, READ_PAGE).await?;
            if seen["weight"].as_str() == Some(wanted.as_str()) {
                Ok(seen)
            } else {
                Err(seen.to_string())
            }
        },
    )
    .await
}

pub async fn a_canary_weight_change_appears_on_the_dashboard_without_a_reload(env: Env) {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        let why = format!(
            "it needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): apt-get install chromium chromium-driver"
        );
        assert!(!in_ci(), "{why} (CI=true: the browser walk must run)");
        eprintln!(
            "SKIPPED a_canary_weight_change_appears_on_the_dashboard_without_a_reload: {why}"
        );
        return;
    }
    let name = "checkout";
    healthy_first_release(
        &env,
        name,
        json!([{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]),
    )
    .await;

    // The dashboard, as `waymark dashboard -n <walk's namespace>` with the suite's kubeconfig.
    let session = waymark::cli::connect::connect(&KubeArgs {
        kubeconfig: Some(kubeconfig_path()),
        context: None,
        request_timeout: None,
    })
    .await
    .expect("the dashboard connects with the e2e kubeconfig");
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let page_url = format!("http://{}/", listener.local_addr().unwrap());
    let args = DashboardArgs {
        address: listener.local_addr().unwrap(),
        namespace: Some(env.namespace.clone()),
        all_namespaces: false,
        since: waymark::api::Duration::from_secs(30 * 86_400),
        kube: KubeArgs {
            kubeconfig: Some(kubeconfig_path()),
            context: None,
            request_timeout: None,
        },
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        dashboard::Dashboard::open(&session, &args)
            .await?
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
    });

    // A new version of the checkout, for a roadmap item with a title, horizon and kind.
    ship_for(
        &env,
        name,
        &image(2),
        json!({"item": "PAY-142", "title": "One-click checkout", "horizon": "now", "kind": "feature"}),
    )
    .await;
    wait_for_weight(&env, name, name, 20).await;
    wait_for_phase(&env, name, Phase::Paused, None).await;

    let driver = start_driver().await;
    let profile = tempfile::tempdir().expect("a browser profile directory");
    let browser = new_session(&driver, profile.path()).await;
    webdriver(
        &driver,
        reqwest::Method::POST,
        &format!("/session/{browser}/url"),
        Some(json!({"url": page_url})),
    )
    .await
    .expect("the browser opens the dashboard");
    let first = page_shows_weight(&driver, &browser, 20).await;
    assert!(
        first["current"]
            .as_str()
            .is_some_and(|row| row.contains("pause until `waymark promote`")),
        "the untimed pause (step 2) is the current step: {first}"
    );
    // Keyboard first: Tab reaches the skip link, shown while focused; Enter moves to the content.
    press(&driver, &browser, TAB).await;
    let skip = run_script(
        &driver,
        &browser,
        "const link = document.activeElement; \
         return {class: link.className, top: link.getBoundingClientRect().top};",
    )
    .await
    .expect("the focused element");
    assert_eq!(
        skip["class"], "skip-link",
        "Tab first reaches the skip link: {skip}"
    );
    assert!(
        skip["top"].as_f64().is_some_and(|top| top >= 0.0),
        "the focused skip link is on screen: {skip}"
    );
    press(&driver, &browser, ENTER).await;
    let at = run_script(&driver, &browser, "return location.hash;").await;
    assert_eq!(
        at,
        Ok(json!("#main")),
        "Enter on the skip link goes to the content"
    );
    run_script(
        &driver,
        &browser,
        "window.waymarkUnreloaded = 'same page'; return null;",
    )
    .await
    .expect("the marker is set");

    // `waymark promote`: the controller moves the canary to 50%; the open page follows.
    request(&env, name, ManualAction::Promote, "dashboard-promote").await;
    wait_for_weight(&env, name, name, 50).await;
    let route_moved = tokio::time::Instant::now();
    let after = page_shows_weight(&driver, &browser, 50).await;
    eprintln!(
        "the page showed 50% {:?} after the route was seen at 50% (polled)",
        route_moved.elapsed()
    );
    assert_eq!(
        after["marker"], "same page",
        "the page was loaded again instead of updated in place: {after}"
    );
    assert!(
        after["live"]
            .as_str()
            .is_some_and(|live| live.contains("canary at 50% of traffic")),
        "the live region announces the change: {after}"
    );

    // Without JavaScript, the page itself says the same.
    let html = reqwest::get(&page_url)
        .await
        .expect("the page answers")
        .text()
        .await
        .expect("the page's text");
    assert!(html.contains("50% of traffic"), "{html}");
    assert!(html.contains("One-click checkout"));

    let screenshot = webdriver(
        &driver,
        reqwest::Method::GET,
        &format!("/session/{browser}/screenshot"),
        None,
    )
    .await
    .expect("a screenshot");
    let png = from_base64(screenshot.as_str().expect("base64 text"));
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
    let path: PathBuf =
        std::env::temp_dir().join(format!("waymark-dashboard-{}.png", env.namespace));
    std::fs::write(&path, png).expect("the screenshot is written");
    eprintln!("dashboard screenshot: {}", path.display());

    let _ = webdriver(
        &driver,
        reqwest::Method::DELETE,
        &format!("/session/{browser}"),
        None,
    )
    .await;
    let _ = stop.send(());
    served
        .await
        .expect("the dashboard task")
        .expect("the dashboard served without error");
}

pub fn base64_decodes_what_webdriver_sends() {
    assert_eq!(from_base64("iVBORw=="), b"\x89PNG");
    assert_eq!(from_base64("aGVsbG8="), b"hello");
    assert_eq!(from_base64("aGk="), b"hi");
    assert_eq!(from_base64(""), b"");
}
