//! The container and cluster files: docker/Dockerfile, docker/dualkey.toml, docker/compose.yml,
//! deploy/kubernetes/ (and deploy/prometheus/*.yml when present). They are parsed, not copied:
//! the probes must hit the admin port the image's ENV opens, the mounts must land where the
//! config reads, every Secret key and claim referred to must exist. The image's own command
//! line (ENTRYPOINT + CMD + ENV, read from the Dockerfile) is run against the real binary and a
//! real PostgreSQL store, and stopped with the Dockerfile's STOPSIGNAL. No container engine
//! runs here: a compose CLI (`docker compose` or `docker-compose`) and `kubectl kustomize` are
//! used when installed, and skipped loudly otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_yaml::Value;

use crate::support::TestDb;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// The final stage of a Dockerfile: its instructions in order (keyword, rest of the line, with
/// continuation lines joined and comments dropped), plus the ARG defaults in scope.
struct Dockerfile {
    stages: usize,
    args: BTreeMap<String, String>,
    instructions: Vec<(String, String)>,
}

impl Dockerfile {
    fn parse(text: &str) -> Dockerfile {
        let mut logical = Vec::new();
        let mut cur = String::new();
        for line in text.lines() {
            let t = line.trim();
            if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
                continue;
            }
            match t.strip_suffix('\\') {
                Some(head) => cur.push_str(head),
                None => {
                    cur.push_str(t);
                    logical.push(std::mem::take(&mut cur));
                }
            }
        }
        let mut df = Dockerfile {
            stages: 0,
            args: BTreeMap::new(),
            instructions: Vec::new(),
        };
        for l in logical {
            let (kw, rest) = l.split_once(char::is_whitespace).unwrap_or((&l, ""));
            let (kw, rest) = (kw.to_uppercase(), rest.trim().to_string());
            if kw == "FROM" {
                df.stages += 1;
                df.instructions.clear();
            } else if kw == "ARG" {
                if let Some((k, v)) = rest.split_once('=') {
                    df.args.insert(k.to_string(), v.to_string());
                }
            }
            df.instructions.push((kw, rest));
        }
        df
    }

    fn all(&self, kw: &str) -> Vec<&str> {
        let found = self.instructions.iter().filter(|(k, _)| k == kw);
        found.map(|(_, r)| r.as_str()).collect()
    }

    fn one(&self, kw: &str) -> &str {
        match self.all(kw)[..] {
            [one] => one,
            ref all => panic!("the final stage needs exactly one {kw}, has {all:?}"),
        }
    }

    /// An exec-form instruction (`["a", "b"]`) as its argument vector.
    fn exec(&self, kw: &str) -> Vec<String> {
        let raw = self.one(kw);
        let json = raw.find('[').map(|i| &raw[i..]).unwrap_or(raw);
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{kw} must be exec form: {e}: {raw}"))
    }

    /// The final stage's ENV, in order, `${NAME}` expanded from ARG defaults and earlier ENV.
    fn env(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for rest in self.all("ENV") {
            for pair in rest.split_whitespace() {
                let (k, v) = pair.split_once('=').expect("ENV in KEY=VALUE form");
                let mut v = v.to_string();
                let known = self.args.iter().chain(out.iter().map(|(k, v)| (k, v)));
                for (name, value) in known.collect::<Vec<_>>() {
                    v = v.replace(&format!("${{{name}}}"), value);
                }
                assert!(!v.contains("${"), "ENV {k}: unknown variable in {v}");
                out.push((k.to_string(), v));
            }
        }
        out
    }

    fn env_var(&self, name: &str) -> String {
        let env = self.env().into_iter().rev();
        let found = env.into_iter().find(|(k, _)| k == name);
        found
            .unwrap_or_else(|| panic!("the image sets no ENV {name}"))
            .1
    }

    /// The file the ENTRYPOINT's `--config` names.
    fn config_path(&self) -> String {
        let ep = self.exec("ENTRYPOINT");
        let at = ep
            .iter()
            .position(|a| a == "--config")
            .expect("--config in ENTRYPOINT");
        ep[at + 1].clone()
    }
}

fn dockerfile() -> Dockerfile {
    Dockerfile::parse(&read("docker/Dockerfile"))
}

/// `host:port` split; the port as a number.
fn listen_parts(addr: &str) -> (String, u16) {
    let (host, port) = addr
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("not host:port: {addr}"));
    (
        host.to_string(),
        port.parse().unwrap_or_else(|_| panic!("port of {addr}")),
    )
}

fn toml_of(text: &str) -> toml::Table {
    text.parse()
        .unwrap_or_else(|e| panic!("config is not TOML: {e}"))
}

fn prod(cfg: &toml::Table) -> &toml::Table {
    cfg["environments"]["production"]
        .as_table()
        .expect("[environments.production]")
}

fn prod_str(cfg: &toml::Table, key: &str) -> String {
    let v = prod(cfg).get(key).and_then(|v| v.as_str());
    v.unwrap_or_else(|| panic!("environments.production.{key}"))
        .to_string()
}

fn argv(cfg: &toml::Table, key: &str) -> Vec<String> {
    let v = prod(cfg).get(key).and_then(|v| v.as_array());
    let v = v.unwrap_or_else(|| panic!("environments.production.{key}"));
    v.iter().map(|a| a.as_str().unwrap().to_string()).collect()
}

fn container_config() -> toml::Table {
    toml_of(&read("docker/dualkey.toml"))
}

#[test]
fn dockerfile_builds_a_non_root_image_that_listens_outside_and_checks_its_admin_port() {
    let df = dockerfile();
    assert!(df.stages >= 2, "multi-stage build expected");
    assert!(df.all("COPY").iter().any(|c| c.starts_with("--from=")));
    let pg: u32 = df.args["PG_MAJOR"].parse().expect("ARG PG_MAJOR=<number>");
    assert!(pg >= 16, "PG_MAJOR default {pg}");
    let run = df.all("RUN").join("\n");
    for needle in [
        "postgresql-client-$PG_MAJOR",
        "apt.postgresql.org.sh",
        " curl",
    ] {
        assert!(
            run.contains(needle),
            "no {needle:?} in the final stage's RUN"
        );
    }
    let user = df.one("USER");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "root" && uid != "0", "USER {user}");
    let (host, main) = listen_parts(&df.env_var("DUALKEY_SERVER_LISTEN"));
    assert_eq!((host.as_str(), main), ("0.0.0.0", 8080));
    let (host, admin) = listen_parts(&df.env_var("DUALKEY_SERVER_ADMIN_LISTEN"));
    assert_eq!(host, "0.0.0.0");
    assert_ne!(main, admin);
    let exposed: Vec<&str> = df.all("EXPOSE").iter().flat_map(|e| e.split(' ')).collect();
    for port in [main, admin] {
        assert!(
            exposed.contains(&port.to_string().as_str()),
            "EXPOSE {port}"
        );
    }
    let check = df.exec("HEALTHCHECK");
    assert_eq!(check[0], "curl");
    assert!(
        check.contains(&format!("http://127.0.0.1:{admin}/healthz")),
        "{check:?}"
    );
    assert_eq!(df.one("STOPSIGNAL"), "SIGTERM");
    let cfg = container_config();
    let backups = prod_str(&cfg, "backup_dir");
    assert!(
        df.one("VOLUME").contains(&format!("\"{backups}\"")),
        "VOLUME {backups}"
    );
    let config = df.config_path();
    assert!(df
        .all("COPY")
        .contains(&format!("docker/dualkey.toml {config}").as_str()));
    assert_eq!(df.exec("ENTRYPOINT")[0], "dualkey");
    assert_eq!(df.exec("CMD"), ["serve"]);
    let path = df.env_var("PATH");
    let bin = df
        .all("COPY")
        .into_iter()
        .find(|c| c.ends_with("/dualkey"))
        .expect("COPY dualkey");
    let bin_dir = Path::new(bin.rsplit(' ').next().unwrap()).parent().unwrap();
    assert!(
        path.split(':').any(|p| Path::new(p) == bin_dir),
        "{bin_dir:?} on PATH {path}"
    );
    assert!(
        path.starts_with(&format!("/usr/lib/postgresql/{pg}/bin:")),
        "{path}"
    );
    let ignore = read(".dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        ".dockerignore must leave out target/"
    );
}

fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    let docs = serde_yaml::Deserializer::from_str(&text);
    let docs = docs.map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{rel}: {e}")));
    docs.filter(|v| !v.is_null()).collect()
}

fn s(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, found {v:?}"))
}

/// Compose's `volumes:` entries of a service as (source, target) pairs.
fn mounts(service: &Value) -> Vec<(String, String)> {
    let list = service["volumes"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    let pair = |m: &Value| {
        let mut parts = s(m).split(':');
        (
            parts.next().unwrap().to_string(),
            parts.next().unwrap().to_string(),
        )
    };
    list.iter().map(pair).collect()
}

/// The host of an `http://host:port/...` URL.
fn url_host(url: &str) -> &str {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not http://: {url}"));
    rest.split([':', '/']).next().unwrap()
}

#[test]
fn compose_file_wires_the_image_the_config_and_the_stand_in_services() {
    let compose = yaml_docs("docker/compose.yml").remove(0);
    let services = compose["services"].as_mapping().expect("services");
    for name in ["dualkey", "store", "taskflow-db", "backend"] {
        let svc = &compose["services"][name];
        assert!(svc.is_mapping(), "service {name}");
        assert!(
            svc["healthcheck"]["test"].is_sequence(),
            "healthcheck of {name}"
        );
    }
    let dk = &compose["services"]["dualkey"];
    assert_eq!(s(&dk["build"]["dockerfile"]), "docker/Dockerfile");
    let deps = dk["depends_on"].as_mapping().expect("depends_on");
    for (dep, how) in deps {
        assert!(services.contains_key(dep), "depends on unknown {dep:?}");
        assert_eq!(s(&how["condition"]), "service_healthy");
    }
    let df = dockerfile();
    let cfg = container_config();
    let m = mounts(dk);
    let has = |src: &str, dst: &str| m.iter().any(|(a, b)| a == src && b == dst);
    assert!(
        has("./dualkey.toml", &df.config_path()),
        "config mount: {m:?}"
    );
    let migrations = prod_str(&cfg, "migrations_dir");
    let src = "../tests/fixtures/taskflow/prisma/migrations";
    assert!(has(src, &migrations), "migrations mount: {m:?}");
    assert!(root().join("docker").join(src).is_dir());
    let backups = prod_str(&cfg, "backup_dir");
    let vol = m
        .iter()
        .find(|(_, b)| *b == backups)
        .expect("a volume on backup_dir");
    assert!(
        compose["volumes"][vol.0.as_str()].is_mapping(),
        "named volume {}",
        vol.0
    );
    let all = serde_yaml::to_string(&compose).unwrap();
    assert!(!all.contains("docker.sock"), "no docker socket is mounted");
    let env = dk["environment"].as_mapping().expect("environment");
    for var in [
        "DUALKEY_STORE_URL".to_string(),
        prod_str(&cfg, "database_url_env"),
    ] {
        assert!(
            env.contains_key(var.as_str()),
            "dualkey's environment lacks {var}"
        );
    }
    let (_, admin) = listen_parts(&df.env_var("DUALKEY_SERVER_ADMIN_LISTEN"));
    let test: Vec<&str> = dk["healthcheck"]["test"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    assert!(
        test.contains(&format!("http://127.0.0.1:{admin}/healthz").as_str()),
        "{test:?}"
    );
    let mut urls = vec![prod_str(&cfg, "health_url")];
    for key in ["app_stop", "app_start", "app_status", "app_logs"] {
        urls.push(argv(&cfg, key).last().unwrap().clone());
    }
    for url in &urls {
        assert!(
            services.contains_key(url_host(url)),
            "{url}: no such compose service"
        );
    }
    let example = read("docker/.env.example");
    let vars = all
        .split("${")
        .skip(1)
        .map(|v| v.split('}').next().unwrap());
    for required in vars.filter_map(|v| v.split_once(":?")) {
        let line = format!("{}=", required.0);
        assert!(
            example.lines().any(|l| l.starts_with(&line)),
            "{line} in .env.example"
        );
    }
}

/// Every document of every YAML file in `dir` (relative to the repository), with its file.
fn yaml_dir(dir: &str) -> Vec<(String, Value)> {
    let Ok(entries) = std::fs::read_dir(root().join(dir)) else {
        return Vec::new();
    };
    let mut files: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml") || f.ends_with(".yml"))
        .collect();
    files.sort();
    let docs = files.into_iter().flat_map(|f| {
        let rel = format!("{dir}/{f}");
        yaml_docs(&rel).into_iter().map(move |d| (f.clone(), d))
    });
    docs.collect()
}

fn find<'a>(docs: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    let found = docs
        .iter()
        .find(|(_, d)| d["kind"] == kind && d["metadata"]["name"] == name);
    &found
        .unwrap_or_else(|| panic!("no {kind} named {name:?} in deploy/kubernetes"))
        .1
}

fn of_kind<'a>(docs: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|(_, d)| d["kind"] == kind)
        .map(|(_, d)| d)
        .collect()
}

/// `selector` (a label map) picks the pod template's `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let sel = selector.as_mapping().expect("a label selector");
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A probe's port, named or numbered, as the container port number.
fn probe_port(container: &Value, probe: &str) -> (String, u64) {
    let get = &container[probe]["httpGet"];
    let port = match &get["port"] {
        Value::Number(n) => n.as_u64().unwrap(),
        named => {
            let ports = container["ports"].as_sequence().expect("ports");
            let p = ports.iter().find(|p| p["name"] == *named);
            p.unwrap_or_else(|| panic!("{probe}: no port named {named:?}"))["containerPort"]
                .as_u64()
                .unwrap()
        }
    };
    (s(&get["path"]).to_string(), port)
}

#[test]
fn kubernetes_manifests_agree_with_each_other_and_with_the_image() {
    let docs = yaml_dir("deploy/kubernetes");
    let mut docs_and_prometheus = docs.clone();
    docs_and_prometheus.extend(yaml_dir("deploy/prometheus"));
    assert!(!docs.is_empty(), "no manifests in deploy/kubernetes");
    for (file, d) in &docs {
        assert!(
            d["apiVersion"].is_string() && d["kind"].is_string(),
            "{file}: {d:?}"
        );
        if d["kind"] != "Kustomization" {
            assert!(d["metadata"]["name"].is_string(), "{file}: metadata.name");
        }
    }
    let dep = find(&docs, "Deployment", "dualkey");
    assert_eq!(dep["spec"]["replicas"].as_u64(), Some(2));
    let labels = &dep["spec"]["template"]["metadata"]["labels"];
    assert!(selects(&dep["spec"]["selector"]["matchLabels"], labels));
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    assert!(
        grace >= 60,
        "a running operation needs more than {grace}s to finish"
    );
    let c = &pod["containers"][0];
    let df = dockerfile();
    let (_, admin) = listen_parts(&df.env_var("DUALKEY_SERVER_ADMIN_LISTEN"));
    let env_names: Vec<&str> = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| s(&e["name"]))
        .collect();
    assert!(
        !env_names.contains(&"DUALKEY_SERVER_ADMIN_LISTEN"),
        "the image's admin port is used"
    );
    assert_eq!(
        probe_port(c, "livenessProbe"),
        ("/healthz".into(), admin.into())
    );
    assert_eq!(
        probe_port(c, "readinessProbe"),
        ("/readyz".into(), admin.into())
    );
    check_secret_refs(&docs, c);
    check_pod_volumes(&docs, pod, c, &df);
    for pdb in of_kind(&docs, "PodDisruptionBudget") {
        assert!(
            selects(&pdb["spec"]["selector"]["matchLabels"], labels),
            "PDB selector"
        );
        assert_eq!(pdb["spec"]["minAvailable"].as_u64(), Some(1));
    }
    assert_eq!(of_kind(&docs, "PodDisruptionBudget").len(), 1);
    let services = of_kind(&docs, "Service");
    assert!(services
        .iter()
        .any(|svc| svc["spec"]["ports"][0]["targetPort"] == "admin"));
    for svc in services {
        assert!(
            selects(&svc["spec"]["selector"], labels),
            "Service selector"
        );
        for p in svc["spec"]["ports"].as_sequence().unwrap() {
            let named = c["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|cp| cp["name"] == p["targetPort"]);
            assert!(
                named,
                "Service targetPort {:?} is no container port",
                p["targetPort"]
            );
        }
    }
    check_kustomization(&docs);
    // deploy/prometheus/*.yml, when present, parsed above (a syntax error fails the test).
    for (file, d) in &docs_and_prometheus {
        assert!(
            d.is_mapping(),
            "{file}: a YAML document should be a mapping, is {d:?}"
        );
    }
}

/// Every `secretKeyRef` names a Secret of deploy/kubernetes and one of its keys.
fn check_secret_refs(docs: &[(String, Value)], c: &Value) {
    let mut refs = 0;
    for e in c["env"].as_sequence().unwrap() {
        let r = &e["valueFrom"]["secretKeyRef"];
        if r.is_null() {
            continue;
        }
        refs += 1;
        let secret = find(docs, "Secret", s(&r["name"]));
        let key = s(&r["key"]);
        assert!(
            secret["stringData"].get(key).is_some(),
            "Secret lacks key {key}"
        );
        assert_eq!(s(&e["name"]), key, "env var and key should match");
    }
    assert!(refs >= 2, "the store and target URLs come from the Secret");
}

/// Claims and ConfigMaps exist; the config lands where the ENTRYPOINT reads it, the backups
/// claim on backup_dir, the migrations on migrations_dir; the config itself says postgres.
fn check_pod_volumes(docs: &[(String, Value)], pod: &Value, c: &Value, df: &Dockerfile) {
    let volumes = pod["volumes"].as_sequence().expect("volumes");
    let mounts = c["volumeMounts"].as_sequence().expect("volumeMounts");
    let mount_of = |name: &str| {
        let m = mounts.iter().find(|m| m["name"] == name);
        s(&m.unwrap_or_else(|| panic!("volume {name} is not mounted"))["mountPath"]).to_string()
    };
    let cm_vol = volumes.iter().find(|v| v["configMap"]["name"].is_string());
    let cm_vol = cm_vol.expect("a ConfigMap volume with the config");
    let cm = find(docs, "ConfigMap", s(&cm_vol["configMap"]["name"]));
    let cfg = toml_of(s(&cm["data"]["dualkey.toml"]));
    assert_eq!(
        format!("{}/dualkey.toml", mount_of(s(&cm_vol["name"]))),
        df.config_path()
    );
    let store = cfg["store"]["url"].as_str().expect("store.url");
    assert!(
        store.starts_with("postgres://"),
        "2 replicas need a PostgreSQL store: {store}"
    );
    let claims: Vec<&Value> = volumes
        .iter()
        .filter(|v| v["persistentVolumeClaim"].is_mapping())
        .collect();
    assert_eq!(claims.len(), 1, "one claim: the backups");
    let pvc = find(
        docs,
        "PersistentVolumeClaim",
        s(&claims[0]["persistentVolumeClaim"]["claimName"]),
    );
    assert_eq!(
        pvc["spec"]["accessModes"][0], "ReadWriteMany",
        "both replicas mount it"
    );
    assert_eq!(
        mount_of(s(&claims[0]["name"])),
        prod_str(&cfg, "backup_dir")
    );
    let migrations = prod_str(&cfg, "migrations_dir");
    let m = mounts
        .iter()
        .find(|m| m["mountPath"] == migrations.as_str());
    assert!(
        m.is_some(),
        "nothing mounted on migrations_dir {migrations}"
    );
}

/// The kustomization lists every manifest but the example Secret, and only files that exist.
fn check_kustomization(docs: &[(String, Value)]) {
    let k = &of_kind(docs, "Kustomization")[0];
    let listed: Vec<&str> = k["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    for (file, d) in docs {
        let expected = d["kind"] != "Kustomization" && d["kind"] != "Secret";
        assert_eq!(
            listed.contains(&file.as_str()),
            expected,
            "{file} in kustomization.yaml"
        );
    }
}

/// A compose CLI: the docker plugin when it answers, else docker-compose (v1 parses `config`
/// without a daemon); `None` when neither is installed.
fn compose_cli() -> Option<Vec<&'static str>> {
    let works = |argv: &[&str]| {
        let out = Command::new(argv[0])
            .args(&argv[1..])
            .arg("version")
            .output();
        out.is_ok_and(|o| o.status.success())
    };
    [&["docker", "compose"][..], &["docker-compose"][..]]
        .into_iter()
        .find(|a| works(a))
        .map(|a| a.to_vec())
}

fn compose(cli: &[&str], env_file: &Path) -> std::process::Output {
    let file = root().join("docker/compose.yml");
    let mut cmd = Command::new(cli[0]);
    cmd.args(&cli[1..])
        .arg("-f")
        .arg(file)
        .arg("--env-file")
        .arg(env_file)
        .arg("config");
    for var in ["STORE_PASSWORD", "TASKFLOW_DB_PASSWORD", "PG_MAJOR"] {
        cmd.env_remove(var);
    }
    cmd.output().expect("run the compose CLI")
}

#[test]
fn a_compose_cli_accepts_the_compose_file_and_the_kustomization_renders() {
    match compose_cli() {
        None => eprintln!(
            "SKIPPED: no compose CLI (neither `docker compose` nor `docker-compose`); \
             docker/compose.yml was parsed as YAML only (apt-get install docker-compose)"
        ),
        Some(cli) => {
            let out = compose(&cli, &root().join("docker/.env.example"));
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{cli:?} config: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let rendered = yaml_docs_of(&text);
            assert_eq!(
                s(&rendered["services"]["dualkey"]["build"]["args"]["PG_MAJOR"]),
                "17"
            );
            let url = s(&rendered["services"]["dualkey"]["environment"]["DUALKEY_STORE_URL"]);
            assert_eq!(url, "postgres://dualkey:change-me-store@store:5432/dualkey");
            // Without the passwords compose refuses, naming the variable.
            let empty = tempfile::NamedTempFile::new().unwrap();
            let out = compose(&cli, empty.path());
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && err.contains("STORE_PASSWORD"),
                "{err}"
            );
            eprintln!("checked docker/compose.yml with {cli:?}");
        }
    }
    let kubectl = Command::new("kubectl")
        .args(["version", "--client"])
        .output();
    if !kubectl.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: no kubectl; `kubectl kustomize deploy/kubernetes` not run");
        return;
    }
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(root().join("deploy/kubernetes"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let kinds: Vec<String> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| s(&Value::deserialize(d).unwrap()["kind"]).to_string())
        .collect();
    for kind in [
        "ConfigMap",
        "Deployment",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "Service",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "kustomize output lacks {kind}: {kinds:?}"
        );
    }
}

fn yaml_docs_of(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("compose config output: {e}\n{text}"))
}

/// The binary to run: `DUALKEY_TEST_RELEASE_BIN` when set (`.ci/run` builds the release
/// binary an image holds and names it there), else the debug build cargo made for these tests;
/// the choice is printed. A path that is set but missing fails rather than falling back.
fn dualkey_bin() -> PathBuf {
    match std::env::var_os("DUALKEY_TEST_RELEASE_BIN") {
        Some(r) => {
            let r = PathBuf::from(r);
            assert!(
                r.is_file(),
                "DUALKEY_TEST_RELEASE_BIN={} is not a file",
                r.display()
            );
            eprintln!("running {} (release build)", r.display());
            r
        }
        None => {
            let debug = PathBuf::from(env!("CARGO_BIN_EXE_dualkey"));
            eprintln!(
                "DUALKEY_TEST_RELEASE_BIN is not set; running {} (CARGO_BIN_EXE_dualkey)",
                debug.display()
            );
            debug
        }
    }
}

/// A container config made runnable on this host: the lines naming the migrations folder and
/// the backup folder (container paths) point at the fixture the compose file mounts and `dir`.
fn for_this_host(config: &str, dir: &Path) -> String {
    let fixture = root().join("tests/fixtures/taskflow/prisma/migrations");
    let mut out = String::new();
    let mut replaced = 0;
    for line in config.lines() {
        let key = line.trim_start().split(" = ").next().unwrap();
        let line = match key {
            "migrations_dir" => format!("migrations_dir = {:?}", fixture.display().to_string()),
            "backup_dir" => format!(
                "backup_dir = {:?}",
                dir.join("backups").display().to_string()
            ),
            _ => line.to_string(),
        };
        replaced +=
            usize::from(line.starts_with("migrations_dir") || line.starts_with("backup_dir"));
        out.push_str(&line);
        out.push('\n');
    }
    assert_eq!(replaced, 2, "migrations_dir and backup_dir, once each");
    out
}

fn configmap_config() -> String {
    let docs = yaml_dir("deploy/kubernetes");
    s(&find(&docs, "ConfigMap", "dualkey-config")["data"]["dualkey.toml"]).to_string()
}

#[tokio::test]
async fn the_container_configs_pass_config_check() {
    let store = TestDb::create("cfgcheck").await;
    let bin = dualkey_bin();
    for (name, text) in [
        ("docker/dualkey.toml", read("docker/dualkey.toml")),
        ("ConfigMap", configmap_config()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dualkey.toml");
        std::fs::write(&path, for_this_host(&text, dir.path())).unwrap();
        let out = Command::new(&bin)
            .arg("--config")
            .arg(&path)
            .args(["config", "check"])
            .env("DUALKEY_STORE_URL", &store.url)
            .env(
                "TASKFLOW_DATABASE_URL",
                format!("{}/postgres", crate::support::pg_base()),
            )
            .output()
            .unwrap();
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "{name}: config check failed:\n{so}\n{se}"
        );
        eprintln!("{name}: {}", so.trim());
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The image's ENV for this host: the same variables and values, but each listener on a free
/// port (8080/9090 may be taken here) with its host kept.
fn image_env(df: &Dockerfile) -> (Vec<(String, String)>, u16, u16) {
    let (main, admin) = (free_port(), free_port());
    let env = df.env().into_iter().map(|(k, v)| {
        let port = match k.as_str() {
            "DUALKEY_SERVER_LISTEN" => main,
            "DUALKEY_SERVER_ADMIN_LISTEN" => admin,
            _ => return (k, v),
        };
        let (host, _) = listen_parts(&v);
        (k, format!("{host}:{port}"))
    });
    (env.collect(), main, admin)
}

async fn get(url: &str) -> Option<(u16, String)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let resp = client.get(url).send().await.ok()?;
    Some((
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    ))
}

async fn wait_for(url: &str, child: &mut std::process::Child) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(answer) = get(url).await {
            return answer;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("dualkey exited ({status}) before {url} answered");
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not answer within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn signal_number(name: &str) -> libc::c_int {
    match name {
        "SIGTERM" => libc::SIGTERM,
        "SIGINT" => libc::SIGINT,
        "SIGQUIT" => libc::SIGQUIT,
        other => panic!("STOPSIGNAL {other}: not one this test knows"),
    }
}

#[tokio::test]
async fn the_image_command_line_serves_health_on_the_admin_port_and_stops_on_its_stopsignal() {
    let df = dockerfile();
    let store = TestDb::create("image").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dualkey.toml");
    std::fs::write(
        &config,
        for_this_host(&read("docker/dualkey.toml"), dir.path()),
    )
    .unwrap();
    // ENTRYPOINT + CMD as the image runs them; the config path the image reads (mounted there
    // in a container) is this host's copy, `dualkey` is the binary under test.
    let mut line = df.exec("ENTRYPOINT");
    line.extend(df.exec("CMD"));
    let image_config = df.config_path();
    let argv: Vec<std::ffi::OsString> = line[1..]
        .iter()
        .map(|a| {
            if *a == image_config {
                config.clone().into()
            } else {
                a.into()
            }
        })
        .collect();
    let (env, main, admin) = image_env(&df);
    let mut child = Command::new(dualkey_bin())
        .args(&argv)
        .env_clear()
        .envs(env)
        .env("HOME", dir.path())
        .env("DUALKEY_STORE_URL", &store.url)
        .env(
            "TASKFLOW_DATABASE_URL",
            format!("{}/postgres", crate::support::pg_base()),
        )
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
        .spawn()
        .expect("start dualkey");
    let health = wait_for(&format!("http://127.0.0.1:{admin}/healthz"), &mut child).await;
    assert_eq!(health.0, 200, "{health:?}");
    let ready = wait_for(&format!("http://127.0.0.1:{admin}/readyz"), &mut child).await;
    assert_eq!(ready.0, 200, "readyz: {ready:?}");
    let chat = wait_for(&format!("http://127.0.0.1:{main}/healthz"), &mut child).await;
    assert_eq!(chat.0, 200, "healthz on the chat port: {chat:?}");
    let on_chat = get(&format!("http://127.0.0.1:{main}/readyz"))
        .await
        .expect("chat port answers");
    assert_eq!(
        on_chat.0, 404,
        "/readyz stays on the admin port: {on_chat:?}"
    );
    let sent = Instant::now();
    let sig = signal_number(df.one("STOPSIGNAL"));
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(30),
            "still running 30 s after the signal"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "exit after {}: {status}\n{log}",
        df.one("STOPSIGNAL")
    );
    assert!(
        log.contains("leases released"),
        "a graceful stop releases the leases:\n{log}"
    );
    eprintln!(
        "stopped with exit 0 {:?} after {}",
        sent.elapsed(),
        df.one("STOPSIGNAL")
    );
}

#[tokio::test]
async fn the_stand_in_backend_obeys_the_configs_app_commands() {
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok());
    let curl = Command::new("curl").arg("--version").output().is_ok();
    let (Some(python), true) = (python, curl) else {
        eprintln!("SKIPPED: python3 or curl missing; docker/backend/backend.py not run");
        return;
    };
    let port = free_port();
    let mut backend = Command::new(python)
        .arg(root().join("docker/backend/backend.py"))
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let cfg = container_config();
    let here = |key: &str| -> Vec<String> {
        let a = argv(&cfg, key);
        let base = "http://backend:3000/";
        assert!(a.last().unwrap().starts_with(base), "{key}: {a:?}");
        let local = format!("http://127.0.0.1:{port}/");
        a.into_iter().map(|x| x.replace(base, &local)).collect()
    };
    let run = |key: &str| {
        let a = here(key);
        let out = Command::new(&a[0]).args(&a[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let health = prod_str(&cfg, "health_url")
        .replace("http://backend:3000", &format!("http://127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(&health).await.is_none() {
        assert!(Instant::now() < deadline, "backend stand-in did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(run("app_status"), "backend: running");
    assert_eq!(run("app_stop"), "backend: stopped");
    assert_eq!(run("app_status"), "backend: stopped");
    assert_eq!(get(&health).await.unwrap().0, 503, "stopped: health fails");
    assert_eq!(run("app_start"), "backend: running");
    assert_eq!(get(&health).await.unwrap().0, 200);
    assert!(run("app_logs").contains("backend stopped"));
    backend.kill().unwrap();
    backend.wait().unwrap();
}
