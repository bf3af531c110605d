//! The bench's cluster: the e2e suite's throwaway control plane with the controller's requests
//! audited, the Waymark and Gateway API CRDs, the controller's RBAC from `config/rbac/`, and a
//! kubeconfig that authenticates as the controller's ServiceAccount.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{ObjectMeta, PostParams, WatchParams};
use kube::{Api, Client};

use waymark::api::Release;

use crate::control_plane::{self, Assets, ControlPlane, Options};
use crate::prepare::{
    CONTROLLER_ACCOUNT, CONTROLLER_NAMESPACE, controller_user, gateway_crds, gateway_crds_dir,
    install_controller_rbac, install_crd,
};
use crate::requests;

/// Field manager of the bench's own writes.
pub const BENCH_MANAGER: &str = "waymark-scale-bench";
/// Lifetime of the controller's token: longer than any run.
const TOKEN_SECONDS: i64 = 7 * 24 * 3600;

/// The running control plane and the audit log of the controller's requests.
pub struct Cluster {
    /// The control plane (stopped when dropped, before `dir` goes).
    pub plane: ControlPlane,
    /// The audit log (requests of [`controller_user`] only).
    pub audit_log: PathBuf,
    /// The bench's own files: audit policy and log, the controller's kubeconfig and log.
    /// Declared last: removed after the processes writing into it have stopped.
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Start the control plane from `KUBEBUILDER_ASSETS` with the controller's requests
    /// audited, and with the API server's streaming lists (`WatchList`, off by default in 1.33)
    /// when `watch_list`. Call outside any async runtime: the harness blocks on one of its own.
    pub fn start(watch_list: bool) -> Result<Cluster, String> {
        let assets = std::env::var_os("KUBEBUILDER_ASSETS")
            .filter(|value| !value.is_empty())
            .ok_or(
                "KUBEBUILDER_ASSETS is not set: the scale bench starts its own control plane \
                 from envtest binaries (a directory holding etcd, kube-apiserver and \
                 kube-controller-manager, as `setup-envtest use -p path` prints)",
            )?;
        let assets = Assets::find(Path::new(&assets))?;
        eprintln!("scale: starting a control plane");
        let dir = tempfile::Builder::new()
            .prefix("waymark-scale-")
            .tempdir()
            .map_err(|error| format!("cannot create a temporary directory: {error}"))?;
        let policy = dir.path().join("audit-policy.yaml");
        let audit_log = dir.path().join("audit.log");
        std::fs::write(&policy, requests::audit_policy(&controller_user()))
            .map_err(|error| format!("cannot write {}: {error}", policy.display()))?;
        // No workload controllers: the bench's fake kubelet writes Deployment status itself.
        let mut apiserver_args = requests::audit_flags(&policy, &audit_log);
        if watch_list {
            apiserver_args.push("--feature-gates=WatchList=true".into());
        }
        let options = Options {
            apiserver_args,
            workload_controllers: false,
        };
        let plane = ControlPlane::start_with(&assets, &options)?;
        Ok(Cluster {
            plane,
            audit_log,
            dir,
        })
    }

    /// An admin client; installs the Waymark and Gateway API CRDs and the controller's RBAC.
    pub async fn prepare(&self) -> Result<Client, String> {
        let admin = control_plane::client_for(self.plane.kubeconfig()).await?;
        install_crd(&admin, &waymark::api::crd::release_crd(), BENCH_MANAGER).await?;
        for crd in gateway_crds(&gateway_crds_dir()?)? {
            install_crd(&admin, &crd, BENCH_MANAGER).await?;
        }
        install_controller_rbac(&admin, BENCH_MANAGER).await?;
        wait_for_release_watches(&admin).await?;
        Ok(admin)
    }

    /// A kubeconfig that authenticates as the controller's ServiceAccount with a token the
    /// API server issued for it, so RBAC and the audit policy see that account itself.
    pub async fn controller_kubeconfig(&self, admin: &Client) -> Result<PathBuf, String> {
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), CONTROLLER_NAMESPACE);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(TOKEN_SECONDS),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let issued = accounts
            .create_token_request(CONTROLLER_ACCOUNT, &PostParams::default(), &request)
            .await
            .map_err(|error| {
                format!("cannot get a token for ServiceAccount {CONTROLLER_ACCOUNT}: {error}")
            })?;
        let token = issued
            .status
            .map(|status| status.token)
            .filter(|token| !token.is_empty())
            .ok_or("the API server issued an empty token")?;
        let admin_config = kube::config::Kubeconfig::read_from(self.plane.kubeconfig())
            .map_err(|error| format!("cannot read the admin kubeconfig: {error}"))?;
        let ca = admin_config
            .clusters
            .first()
            .and_then(|cluster| cluster.cluster.as_ref())
            .and_then(|cluster| cluster.certificate_authority.clone())
            .ok_or("the admin kubeconfig names no certificate authority file")?;
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    \
             server: {}\n    certificate-authority: {ca}\nusers:\n- name: {CONTROLLER_ACCOUNT}\n  \
             user:\n    token: {token}\ncontexts:\n- name: local\n  context: {{cluster: local, \
             user: {CONTROLLER_ACCOUNT}}}\ncurrent-context: local\n",
            self.plane.server()
        );
        let path = self.dir.path().join("controller.kubeconfig");
        control_plane::write_private(&path, &text)?;
        Ok(path)
    }
}

/// Create namespace `name`.
pub async fn create_namespace(admin: &Client, name: &str) -> Result<(), String> {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .map_err(|error| format!("cannot create namespace {name}: {error}"))?;
    Ok(())
}

/// Wait until the API server serves WATCHes of Releases. Right after a CRD is established its
/// watch cache is still initializing and a WATCH is answered 429; a controller started then
/// would see its first Releases only after its watch's backoff, which is no part of its speed.
async fn wait_for_release_watches(admin: &Client) -> Result<(), String> {
    let releases: Api<Release> = Api::all(admin.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match releases
            .watch(&WatchParams::default().timeout(1), "0")
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 429 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return Err(format!("the API server does not watch Releases: {error}")),
        }
    }
}
