//! `waymark dashboard`: a read-only web page of the roadmap's delivery and each Release, served
//! by the CLI with the user's own kubeconfig and kept live by a watch on the Releases.
//!
//! - [`view`]: the HTML, pure, from plain values (the figures come from the functions behind
//!   `waymark roadmap`, `status` and `postmortem`);
//! - [`server`]: the axum routes and the server-sent events (one HTML fragment per change);
//! - [`follow`]: the watch that feeds them.
//!
//! Everything served (the page, its stylesheet and script) is in the binary: nothing is loaded
//! from the internet, and the page works without JavaScript (whole, with a refresh link).

pub mod server;
pub mod view;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use kube::Api;
use kube::runtime::watcher;
use tokio::net::TcpListener;

use super::errors::{Call, classify};
use super::{CliError, KubeArgs, Session, namespace_of, watch_failure};
use crate::api::{Duration, Release};
use server::Board;

/// `waymark dashboard`.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct DashboardArgs {
    /// Where to serve the page. Loopback by default: the page shows what your kubeconfig may
    /// read, to anyone who reaches the address.
    #[arg(long, default_value = "127.0.0.1:3100")]
    pub address: SocketAddr,
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// All namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Count the history entries finished within this span (e.g. 30d, 12w) in the delivery
    /// figures, as `waymark roadmap --since`.
    #[arg(long, default_value = "30d")]
    pub since: Duration,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Serves the dashboard at `args.address` until Ctrl-C, after saying where on `out`.
pub async fn run(
    session: &Session,
    args: DashboardArgs,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let dashboard = Dashboard::open(session, &args).await?;
    let listener = TcpListener::bind(args.address)
        .await
        .map_err(|error| CliError::Config {
            what: format!("cannot listen on --address {}", args.address),
            reason: format!("{error}; pick another address or port"),
        })?;
    let address = listener.local_addr()?;
    writeln!(
        out,
        "Serving the dashboard at http://{address}/ (read-only; Ctrl-C stops it)"
    )?;
    out.flush()?;
    dashboard
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}

/// What a dashboard follows and serves: the Releases `args` name, as first listed.
pub struct Dashboard {
    api: Api<Release>,
    board: Arc<Board>,
    describe: Box<dyn Fn(watcher::Error) -> String + Send>,
}

impl Dashboard {
    /// Lists the Releases `args` name. A first list fails fast, with the CLI's words, on a
    /// kubeconfig, CRD or role that cannot work; later failures of the watch are said on the
    /// page while it is retried.
    pub async fn open(session: &Session, args: &DashboardArgs) -> Result<Self, CliError> {
        let listed = super::list_releases(session, &args.namespace, args.all_namespaces).await?;
        let (api, scope): (Api<Release>, String) = match &listed.namespace {
            Some(namespace) => (
                Api::namespaced(session.client.clone(), namespace),
                format!("namespace {namespace}"),
            ),
            None => (Api::all(session.client.clone()), "all namespaces".into()),
        };
        let call = Call {
            verb: "watch",
            resource: "releases",
            namespace: listed.namespace.clone(),
            name: None,
            namespace_from: namespace_of(session, &args.namespace).1,
        };
        let tried = session.tried.clone();
        let board = Arc::new(Board::new(scope, Some(args.since), super::now));
        board.replace_all(listed.items);
        Ok(Self {
            api,
            board,
            describe: Box::new(move |error| {
                classify(watch_failure(error), &call, &tried).to_string()
            }),
        })
    }

    /// Serves the page on `listener` until `shutdown` completes, a watch on the Releases
    /// feeding it and its live events. In-process callers (the e2e suite) bind their own port.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), CliError> {
        let watch = tokio::spawn(follow(self.api, self.board.clone(), self.describe));
        let served = axum::serve(listener, server::router(self.board))
            .with_graceful_shutdown(shutdown)
            .await;
        watch.abort();
        served?;
        Ok(())
    }
}

/// Keeps `board` up to date from a watch on `api`'s Releases, for as long as it runs. A failed
/// watch is said on the page (in the words `describe` gives it) and started again (a list,
/// then a watch) with the controller's capped delays.
pub async fn follow(
    api: Api<Release>,
    board: Arc<Board>,
    describe: impl Fn(watcher::Error) -> String + Send + 'static,
) {
    let mut failures = 0;
    loop {
        let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
        let mut listed = Vec::new();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => listed.clear(),
                Ok(watcher::Event::InitApply(release)) => listed.push(release),
                Ok(watcher::Event::InitDone) => {
                    failures = 0;
                    board.set_watch_error(None);
                    board.replace_all(std::mem::take(&mut listed));
                }
                Ok(watcher::Event::Apply(release)) => board.apply(release),
                Ok(watcher::Event::Delete(release)) => board.delete(&release),
                Err(error) => {
                    failures += 1;
                    board.set_watch_error(Some(describe(error)));
                    break;
                }
            }
        }
        tokio::time::sleep(crate::controller::watch::retry_delay(failures.max(1), 0.5)).await;
    }
}
