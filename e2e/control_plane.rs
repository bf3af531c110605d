//! A throwaway Kubernetes control plane for tests, started from envtest binaries.
//!
//! `KUBEBUILDER_ASSETS` names a directory holding `etcd` and `kube-apiserver` (and optionally
//! `kube-controller-manager`): the layout controller-runtime's envtest and `setup-envtest` use.
//! [`ControlPlane::start_with`] runs them on free loopback ports in a temporary directory with a CA,
//! serving and client certificates and service-account keys of its own, and writes an admin
//! kubeconfig. Dropping the [`ControlPlane`] stops every process it started (by pid) and removes
//! the directory; the processes also die with the test process if it is killed
//! (`PR_SET_PDEATHSIG`), so a crashed run leaves no orphans.
//!
//! The kube-controller-manager, when present, runs the garbage collector, namespace,
//! service-account and cluster-role aggregation controllers: owned objects are
//! garbage-collected, namespaces deleted and aggregated roles filled as in a real cluster. With
//! [`Options::workload_controllers`] it also runs the Deployment, ReplicaSet and EndpointSlice
//! controllers: Deployments roll out through ReplicaSets and pods, and Services get
//! EndpointSlices, as in a real cluster. There is no scheduler and no kubelet: pods stay
//! Pending until someone (the e2e suite's simulated kubelet) binds them and reports them.

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// How long each component may take to become ready.
const START_DEADLINE: Duration = Duration::from_secs(90);
/// How often readiness is probed.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// Attempts when a free port was taken between choosing it and binding it.
const START_ATTEMPTS: usize = 4;
/// Only for object validation: no traffic goes there.
const SERVICE_CIDR: &str = "10.96.0.0/16";
const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The binaries found in `KUBEBUILDER_ASSETS`.
#[derive(Clone, Debug)]
pub struct Assets {
    /// `etcd`.
    pub etcd: PathBuf,
    /// `kube-apiserver`.
    pub kube_apiserver: PathBuf,
    /// `kube-controller-manager`, when present.
    pub kube_controller_manager: Option<PathBuf>,
}

impl Assets {
    /// The binaries in `dir`, or why they cannot be used.
    pub fn find(dir: &Path) -> Result<Assets, String> {
        let binary = |name: &str| {
            let path = dir.join(name);
            path.is_file().then_some(path)
        };
        let missing = |name: &str| {
            format!(
                "KUBEBUILDER_ASSETS={} has no {name} binary (it must hold etcd and kube-apiserver, \
                 as `setup-envtest use -p path` prints)",
                dir.display()
            )
        };
        Ok(Assets {
            etcd: binary("etcd").ok_or_else(|| missing("etcd"))?,
            kube_apiserver: binary("kube-apiserver").ok_or_else(|| missing("kube-apiserver"))?,
            kube_controller_manager: binary("kube-controller-manager"),
        })
    }
}

/// What a caller may add to the defaults of [`ControlPlane::start_with`].
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Extra `kube-apiserver` flags, after the harness's own (say an audit policy and log).
    pub apiserver_args: Vec<String>,
    /// Also run kube-controller-manager's `deployment`, `replicaset` and `endpointslice`
    /// controllers. Pods then need a simulated kubelet to become Ready; a caller that writes
    /// Deployment status itself must leave this off, or the Deployment controller overwrites it.
    pub workload_controllers: bool,
}

/// The kube-controller-manager controllers every control plane runs: owned objects are
/// garbage-collected, namespaces deleted, ServiceAccounts made, and the built-in view/edit/admin
/// roles filled from the roles that aggregate to them (Waymark's viewer and operator roles).
const HOUSEKEEPING_CONTROLLERS: &str =
    "garbagecollector,namespace,serviceaccount,serviceaccount-token,clusterrole-aggregation";
/// The controllers that turn a Deployment into ReplicaSets and pods and a Service into
/// EndpointSlices ([`Options::workload_controllers`]).
const WORKLOAD_CONTROLLERS: &str = "deployment,replicaset,endpointslice";

/// A running control plane; stopped when dropped.
pub struct ControlPlane {
    dir: tempfile::TempDir,
    processes: Vec<Process>,
    kubeconfig: PathBuf,
    server: String,
    /// How kube-apiserver was started (binary, flags, port), to start it again the same way.
    apiserver: Option<(PathBuf, Vec<String>, u16)>,
}

struct Process {
    name: &'static str,
    child: Child,
}

impl ControlPlane {
    /// Start etcd, kube-apiserver and (when present) kube-controller-manager, with `options`
    /// added to the defaults, and wait until the API server answers `/readyz`. Blocks for
    /// ~5-20 s.
    pub fn start_with(assets: &Assets, options: &Options) -> Result<ControlPlane, String> {
        let dir = tempfile::Builder::new()
            .prefix("waymark-control-plane-")
            .tempdir()
            .map_err(|error| format!("cannot create a temporary directory: {error}"))?;
        let pki = Pki::create(&dir.path().join("pki"))?;
        let mut plane = ControlPlane {
            kubeconfig: dir.path().join("kubeconfig"),
            server: String::new(),
            processes: Vec::new(),
            dir,
            apiserver: None,
        };
        plane.start_etcd_and_apiserver(assets, &pki, options)?;
        write_kubeconfig(
            &plane.kubeconfig,
            &plane.server,
            &pki.ca_cert,
            &pki.admin_cert,
            &pki.admin_key,
        )?;
        if let Some(kcm) = &assets.kube_controller_manager {
            let kcm_kubeconfig = plane.dir.path().join("kcm.kubeconfig");
            write_kubeconfig(
                &kcm_kubeconfig,
                &plane.server,
                &pki.ca_cert,
                &pki.kcm_cert,
                &pki.kcm_key,
            )?;
            let kubeconfig = flag("kubeconfig", &kcm_kubeconfig);
            let args = vec![
                kubeconfig.clone(),
                flag("authentication-kubeconfig", &kcm_kubeconfig),
                flag("authorization-kubeconfig", &kcm_kubeconfig),
                "--bind-address=127.0.0.1".into(),
                // No serving port: nothing here scrapes the controller manager.
                "--secure-port=0".into(),
                controllers_flag(options.workload_controllers),
                "--use-service-account-credentials=true".into(),
                flag("service-account-private-key-file", &pki.sa_key),
                flag("root-ca-file", &pki.ca_cert),
                "--leader-elect=false".into(),
                "--v=1".into(),
            ];
            plane.spawn("kube-controller-manager", kcm, &args)?;
        }
        Ok(plane)
    }

    fn start_etcd_and_apiserver(
        &mut self,
        assets: &Assets,
        pki: &Pki,
        options: &Options,
    ) -> Result<(), String> {
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let (client_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
            let data = self.dir.path().join("etcd-data");
            let _ = fs::remove_dir_all(&data);
            let client_url = format!("http://127.0.0.1:{client_port}");
            let peer_url = format!("http://127.0.0.1:{peer_port}");
            // This etcd build takes its flags from a config file only.
            let etcd_config = self.dir.path().join("etcd.yaml");
            let etcd_yaml = format!(
                "name: local\ndata-dir: {}\nlisten-client-urls: {client_url}\n\
                 advertise-client-urls: {client_url}\nlisten-peer-urls: {peer_url}\n\
                 initial-advertise-peer-urls: {peer_url}\ninitial-cluster: local={peer_url}\n\
                 initial-cluster-state: new\nlog-level: warn\nlogger: zap\n\
                 log-outputs: [stderr]\n\
                 # A throwaway store: durability is not worth an fsync per write.\n\
                 unsafe-no-fsync: true\n",
                data.display()
            );
            write_private(&etcd_config, &etcd_yaml)?;
            let etcd_args = vec![
                "--config-file".to_string(),
                etcd_config.display().to_string(),
            ];
            self.spawn("etcd", &assets.etcd, &etcd_args)?;
            if let Err(error) = self.wait_for_port("etcd", client_port) {
                last_error = error;
                self.stop_all();
                continue;
            }
            let mut api_args = vec![
                format!("--etcd-servers={client_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                flag("tls-cert-file", &pki.apiserver_cert),
                flag("tls-private-key-file", &pki.apiserver_key),
                flag("client-ca-file", &pki.ca_cert),
                format!("--service-account-issuer={SA_ISSUER}"),
                flag("service-account-key-file", &pki.sa_pub),
                flag("service-account-signing-key-file", &pki.sa_key),
                "--endpoint-reconciler-type=none".into(),
                "--authorization-mode=RBAC".into(),
                // As OpenShift and hardened clusters run it: an owner reference with
                // blockOwnerDeletion needs `update` on the owner's finalizers, so the suite
                // proves the controller's ClusterRole grants it.
                "--enable-admission-plugins=OwnerReferencesPermissionEnforcement".into(),
                "--allow-privileged=true".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ];
            api_args.extend(options.apiserver_args.iter().cloned());
            self.spawn("kube-apiserver", &assets.kube_apiserver, &api_args)?;
            self.server = format!("https://127.0.0.1:{api_port}");
            self.apiserver = Some((assets.kube_apiserver.clone(), api_args, api_port));
            write_kubeconfig(
                &self.probe_kubeconfig(),
                &self.server,
                &pki.ca_cert,
                &pki.admin_cert,
                &pki.admin_key,
            )?;
            match self.wait_for_readyz(api_port) {
                Ok(()) => return Ok(()),
                Err(error) => {
                    last_error = error;
                    self.stop_all();
                }
            }
        }
        Err(format!(
            "the control plane did not start in {START_ATTEMPTS} attempts: {last_error}"
        ))
    }

    /// The admin kubeconfig (user `kubernetes-admin`, group `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The last lines a component logged (for failure messages).
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let text =
            fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn spawn(&mut self, name: &'static str, binary: &Path, args: &[String]) -> Result<(), String> {
        let log = fs::File::create(self.dir.path().join(format!("{name}.log")))
            .map_err(|error| format!("cannot create the {name} log: {error}"))?;
        let err_log = log
            .try_clone()
            .map_err(|error| format!("cannot share the {name} log: {error}"))?;
        let mut command = Command::new(binary);
        command
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log);
        // A killed test process leaves no control plane behind.
        die_with_parent(&mut command);
        let child = command
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
        self.processes.push(Process { name, child });
        Ok(())
    }

    fn exited(&mut self, name: &str) -> Option<String> {
        let process = self.processes.iter_mut().find(|p| p.name == name)?;
        match process.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "{name} exited ({status}): {}",
                self.log_tail(name, 5)
            )),
            _ => None,
        }
    }

    fn wait_for_port(&mut self, name: &str, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(exit) = self.exited(name) {
                return Err(exit);
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{name} not listening on 127.0.0.1:{port} after {START_DEADLINE:?}: {}",
                    self.log_tail(name, 5)
                ));
            }
            std::thread::sleep(PROBE_EVERY);
        }
    }

    /// Stop kube-apiserver (SIGTERM, as an upgrade does), leaving etcd and the rest running.
    /// Blocking: call it from a blocking thread in async code.
    pub fn stop_apiserver(&mut self) {
        if let Some(index) = self
            .processes
            .iter()
            .position(|process| process.name == "kube-apiserver")
        {
            let mut process = self.processes.remove(index);
            stop(&mut process.child, Duration::from_secs(5));
        }
    }

    /// Start kube-apiserver again with the same flags, port and etcd, and wait until it
    /// answers `/readyz`. Blocking, like [`ControlPlane::stop_apiserver`].
    pub fn start_apiserver(&mut self) -> Result<(), String> {
        let (binary, args, port) = self
            .apiserver
            .clone()
            .ok_or("kube-apiserver was never started")?;
        // The old log is kept beside the new one.
        let log = self.dir.path().join("kube-apiserver.log");
        let _ = fs::rename(&log, self.dir.path().join("kube-apiserver.previous.log"));
        self.spawn("kube-apiserver", &binary, &args)?;
        self.wait_for_readyz(port)
    }

    fn probe_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("probe.kubeconfig")
    }

    fn wait_for_readyz(&mut self, port: u16) -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| format!("cannot build a runtime: {error}"))?;
        let kubeconfig = self.probe_kubeconfig();
        let client = runtime.block_on(client_for(&kubeconfig))?;
        let deadline = Instant::now() + START_DEADLINE;
        let mut last;
        loop {
            if let Some(exit) = self.exited("kube-apiserver") {
                return Err(exit);
            }
            let probe = runtime.block_on(async {
                let request = http::Request::get("/readyz")
                    .body(Vec::new())
                    .map_err(|error| error.to_string())?;
                tokio::time::timeout(Duration::from_secs(5), client.request_text(request))
                    .await
                    .map_err(|_| "no answer within 5s".to_string())?
                    .map_err(|error| error.to_string())
            });
            match probe {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => last = body,
                Err(error) => last = error,
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "kube-apiserver on port {port} not ready after {START_DEADLINE:?} ({last}): {}",
                    self.log_tail("kube-apiserver", 5)
                ));
            }
            std::thread::sleep(PROBE_EVERY);
        }
    }

    /// Stop every process (newest first): SIGTERM, then SIGKILL after 5 s.
    fn stop_all(&mut self) {
        while let Some(mut process) = self.processes.pop() {
            stop(&mut process.child, Duration::from_secs(5));
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// A client for the cluster in `kubeconfig` (its current context).
pub async fn client_for(kubeconfig: &Path) -> Result<kube::Client, String> {
    let config = config_for(kubeconfig).await?;
    kube::Client::try_from(config).map_err(|error| format!("cannot build a client: {error}"))
}

/// The client configuration of `kubeconfig`'s current context.
pub async fn config_for(kubeconfig: &Path) -> Result<kube::Config, String> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|error| format!("cannot read {}: {error}", kubeconfig.display()))?;
    kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|error| format!("cannot use {}: {error}", kubeconfig.display()))
}

/// Make `command`'s process get SIGKILL when the thread that starts it ends (Linux
/// `PR_SET_PDEATHSIG`), so that a killed test or bench leaves no process behind.
pub fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() == 1 {
                return Err(std::io::Error::other("the parent already exited"));
            }
            Ok(())
        });
    }
}

/// Stop `child`: SIGTERM, then SIGKILL when it has not exited after `grace`.
pub fn stop(child: &mut Child, grace: Duration) {
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    // SAFETY: plain kill(2) on a child we started and have not reaped yet.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// kube-controller-manager's `--controllers` flag: the housekeeping controllers, and the
/// workload controllers when asked for.
fn controllers_flag(workload_controllers: bool) -> String {
    if workload_controllers {
        format!("--controllers={HOUSEKEEPING_CONTROLLERS},{WORKLOAD_CONTROLLERS}")
    } else {
        format!("--controllers={HOUSEKEEPING_CONTROLLERS}")
    }
}

fn flag(name: &str, path: &Path) -> String {
    format!("--{name}={}", path.display())
}

/// A loopback port free at the time of asking.
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|error| format!("cannot find a free loopback port: {error}"))
}

fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<(), String> {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    \
         certificate-authority: {}\nusers:\n- name: user\n  user:\n    client-certificate: {}\n    \
         client-key: {}\ncontexts:\n- name: local\n  context: {{cluster: local, user: user}}\n\
         current-context: local\n",
        ca.display(),
        cert.display(),
        key.display()
    );
    write_private(path, &text)
}

/// Write `text` to `path`, readable by the owner only (keys, tokens).
pub fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}

/// The certificates and keys of one control plane, as files.
struct Pki {
    ca_cert: PathBuf,
    apiserver_cert: PathBuf,
    apiserver_key: PathBuf,
    admin_cert: PathBuf,
    admin_key: PathBuf,
    kcm_cert: PathBuf,
    kcm_key: PathBuf,
    sa_key: PathBuf,
    sa_pub: PathBuf,
}

impl Pki {
    fn create(dir: &Path) -> Result<Pki, String> {
        let fail = |what: &str, error: rcgen::Error| format!("cannot make the {what}: {error}");
        fs::create_dir_all(dir)
            .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
        let write = |name: &str, text: &str| -> Result<PathBuf, String> {
            let path = dir.join(name);
            write_private(&path, text)?;
            Ok(path)
        };

        let ca_key = KeyPair::generate().map_err(|e| fail("CA key", e))?;
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| fail("CA", e))?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "waymark-e2e-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| fail("CA", e))?;
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |sans: Vec<String>,
                    common_name: &str,
                    organization: Option<&str>,
                    usage: ExtendedKeyUsagePurpose|
         -> Result<(String, String), String> {
            let key = KeyPair::generate().map_err(|e| fail(common_name, e))?;
            let mut params = CertificateParams::new(sans).map_err(|e| fail(common_name, e))?;
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
            if let Some(organization) = organization {
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, organization);
            }
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![usage];
            let cert = params
                .signed_by(&key, &issuer)
                .map_err(|e| fail(common_name, e))?;
            Ok((cert.pem(), key.serialize_pem()))
        };

        let (apiserver_cert, apiserver_key) = leaf(
            [
                "127.0.0.1",
                "10.96.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
            ]
            .map(String::from)
            .to_vec(),
            "kube-apiserver",
            None,
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let (admin_cert, admin_key) = leaf(
            vec![],
            "kubernetes-admin",
            Some("system:masters"),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let (kcm_cert, kcm_key) = leaf(
            vec![],
            "system:kube-controller-manager",
            None,
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let sa = KeyPair::generate().map_err(|e| fail("service-account key", e))?;

        Ok(Pki {
            ca_cert: write("ca.crt", &ca_cert.pem())?,
            apiserver_cert: write("apiserver.crt", &apiserver_cert)?,
            apiserver_key: write("apiserver.key", &apiserver_key)?,
            admin_cert: write("admin.crt", &admin_cert)?,
            admin_key: write("admin.key", &admin_key)?,
            kcm_cert: write("kcm.crt", &kcm_cert)?,
            kcm_key: write("kcm.key", &kcm_key)?,
            sa_key: write("sa.key", &sa.serialize_pem())?,
            sa_pub: write("sa.pub", &sa.public_key_pem())?,
        })
    }
}
