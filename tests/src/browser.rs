//! Headless Chromium driven through chromedriver (Debian's `chromium` and `chromium-driver`
//! packages, which `scripts/test.sh` installs), for the pages the services serve.

use crate::process::Running;
use crate::{eventually, free_addr};
use fantoccini::{Client, ClientBuilder, Locator};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A chromedriver process and one browser session on it (1920×1080, like a TV).
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    _driver: Running,
}

fn binary(env: &str, default: &str) -> String {
    std::env::var(env).unwrap_or_else(|_| default.into())
}

impl Browser {
    /// Starts chromedriver (`CHROMEDRIVER`, default `/usr/bin/chromedriver`) and a headless
    /// Chromium session (`CHROMIUM`, default `/usr/bin/chromium`).
    pub async fn start() -> Self {
        let addr = free_addr();
        let port = addr.rsplit(':').next().expect("port").to_string();
        let driver = Running::new(
            Command::new(binary("CHROMEDRIVER", "/usr/bin/chromedriver"))
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn chromedriver (apt-get install chromium-driver)"),
        );
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": binary("CHROMIUM", "/usr/bin/chromium"),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1920,1080",
                         "--hide-scrollbars", "--lang=en-US"],
            }),
        );
        let url = format!("http://{addr}");
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = eventually(
            Duration::from_secs(30),
            || async {
                ClientBuilder::new(connector.clone())
                    .capabilities(caps.clone())
                    .connect(&url)
                    .await
                    .ok()
                    .map(Some)
            },
            |c| c.is_some(),
        )
        .await
        .flatten()
        .expect("a chromedriver session");
        Self {
            client,
            _driver: driver,
        }
    }

    /// The `data-value` of the element `css`, when it exists.
    pub async fn data_value(&self, css: &str) -> Option<String> {
        let el = self.client.find(Locator::Css(css)).await.ok()?;
        el.attr("data-value").await.ok().flatten()
    }

    /// The text of the element `css`, when it exists.
    pub async fn text(&self, css: &str) -> Option<String> {
        let el = self.client.find(Locator::Css(css)).await.ok()?;
        el.text().await.ok()
    }
}
