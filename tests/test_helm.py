"""The Helm chart (helm/callwaiting-tts): rendered with tests/helm_render.py (no helm binary here), every
manifest validated against the Kubernetes OpenAPI schemas shipped in kubernetes-validate (offline, strict:
an unknown field fails), and the behaviour an operator relies on asserted. With helm on PATH, `helm lint`
and `helm template` must agree with the renderer."""
import base64
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.helm_render import HelmTemplateError, render_chart

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "callwaiting-tts"
RELEASE = "tts"
FULLNAME = "tts-callwaiting-tts"
# The chart's kubeVersion floor and the newest schemas the pinned kubernetes-validate ships.
KUBERNETES_VERSIONS = ["1.25", "1.37"]

HELM_README = (ROOT / "helm" / "README.md").read_text()
SECRET_KEY = "k" * 50
REQUIRED = {"secretKey": SECRET_KEY, "postgresql": {"auth": {"password": "pgPassword1"}}}
EXTERNAL = {
    "secretKey": SECRET_KEY,
    "postgresql": {"enabled": False},
    "redis": {"enabled": False},
    "externalDatabase": {"url": "postgres://tts:dbPassword1@db.example.internal:5432/tts"},
    "externalRedis": {"url": "rediss://:redisPassword1@cache.example.internal:6380/0"},
}
SCENARIOS = {
    "defaults": REQUIRED,
    "external services": EXTERNAL,
    "bundled with passwords and volumes": {
        **REQUIRED,
        "redis": {"auth": {"enabled": True, "password": "redisPassword1"}},
        "media": {"persistence": {"enabled": True}},
        "worker": {"modelCache": {"persistence": {"enabled": True}}},
        "s3": {"accessKeyId": "AKIAEXAMPLE", "secretAccessKey": "s3secret"},
    },
    "three workers with two GPUs": {
        **REQUIRED,
        "worker": {"replicaCount": 3, "gpu": {"count": 2}, "engines": "xtts", "capacity": 4},
    },
    "cpu workers": {**REQUIRED, "worker": {"gpu": {"count": 0}, "engines": "espeak", "tolerations": []}},
    "ingress": {
        **REQUIRED,
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"},
            "hosts": [{"host": "tts.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
            "tls": [{"secretName": "tts-tls", "hosts": ["tts.example.com"]}],
        },
        "s3": {"bucket": "voices", "endpointUrl": "https://minio.example.com", "region": "eu-west-3"},
    },
    "existing secret": {"existingSecret": "tts-credentials"},
    # The production example in helm/README.md.
    "readme example": yaml.safe_load(HELM_README.split("```yaml\n", 1)[1].split("```", 1)[0]),
}
CREDENTIALS = [
    "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "METRICS_TOKEN", "EMAIL_HOST_PASSWORD",
]
APP_COMPONENTS = ["web", "worker", "celery", "celery-beat", "migrate"]


class _UniqueKeyLoader(yaml.SafeLoader):
    """Kubernetes rejects a mapping with a repeated key; PyYAML would silently keep the last one."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise yaml.constructor.ConstructorError(None, None, f"repeated keys {repeated}", node.start_mark)
        return super().construct_mapping(node, deep)


def parse(text: str) -> list[dict]:
    return [doc for doc in yaml.load_all(text, Loader=_UniqueKeyLoader) if doc is not None]


def render(overrides: dict) -> list[dict]:
    rendered = render_chart(CHART, overrides, release=RELEASE, strict=True)
    return [doc for text in rendered.values() for doc in parse(text)]


def render_notes(overrides: dict) -> str:
    [notes] = render_chart(CHART, overrides, release=RELEASE, strict=True, notes=True).values()
    return notes


def find(docs, kind, name=None) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)]


def workload(docs, component) -> dict:
    [found] = [
        doc
        for doc in docs
        if doc["kind"] in ("Deployment", "StatefulSet", "Job")
        and doc["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    return found


def pod(docs, component) -> dict:
    """The pod template of a component: its metadata and spec."""
    return workload(docs, component)["spec"]["template"]


def container(docs, component) -> dict:
    [main] = pod(docs, component)["spec"]["containers"]
    return main


def effective_env(main: dict, docs) -> dict[str, tuple]:
    """What the kubelet gives the container: envFrom first, then env, which wins on a repeated name."""
    names = [item["name"] for item in main.get("env", [])]
    assert len(names) == len(set(names)), f"{main['name']} sets a variable twice"
    env = {}
    for source in main.get("envFrom", []):
        [config_map] = find(docs, "ConfigMap", source["configMapRef"]["name"])
        env.update({name: ("configmap", value) for name, value in config_map["data"].items()})
    for item in main.get("env", []):
        if "value" in item:
            env[item["name"]] = ("value", item["value"])
        elif "secretKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = ("secret", ref["name"], ref["key"])
        else:
            env[item["name"]] = ("field", item["valueFrom"]["fieldRef"]["fieldPath"])
    return env


def secret_data(docs) -> dict[str, str]:
    [secret] = find(docs, "Secret")
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def selects(selector: dict, labels: dict) -> bool:
    return selector.items() <= labels.items()


# --- every manifest is valid Kubernetes ---------------------------------------------------------------------------
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(scenario, version):
    docs = render(SCENARIOS[scenario])
    assert docs
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(map(str, exc.path))
            pytest.fail(f"{scenario}: {name} is invalid on Kubernetes {version}: {where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{scenario}: {name}: {exc.message}")
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), name
        assert len(doc["metadata"]["name"]) <= 63, name
    kinds_and_names = [(doc["kind"], doc["metadata"]["name"]) for doc in docs]
    assert len(kinds_and_names) == len(set(kinds_and_names))


def test_installing_without_credentials_fails_with_a_message_that_says_what_to_set():
    with pytest.raises(HelmTemplateError, match="secretKey is required"):
        render({})
    with pytest.raises(HelmTemplateError, match="postgresql.auth.password is required"):
        render({"secretKey": SECRET_KEY})
    with pytest.raises(HelmTemplateError, match="externalDatabase.url is required"):
        render({**EXTERNAL, "externalDatabase": {"url": ""}})
    with pytest.raises(HelmTemplateError, match="redis.auth.password is required"):
        render({**REQUIRED, "redis": {"auth": {"enabled": True}}})
    with pytest.raises(HelmTemplateError, match="config.SECRET_KEY is a credential"):
        render({**REQUIRED, "config": {"SECRET_KEY": "in-a-configmap"}})


# --- the roles ------------------------------------------------------------------------------------------------
def test_web_runs_daphne_without_a_model_and_is_ready_only_when_health_says_so():
    docs = render(REQUIRED)
    web = container(docs, "web")
    assert web["command"] == ["python", "-m", "callwaiting.server", "-b", "0.0.0.0", "-p", "8000", "callwaiting.asgi:application"]
    env = effective_env(web, docs)
    assert env["TTS_EMBEDDED_WORKER"] == ("value", "0")
    readiness = web["readinessProbe"]["httpGet"]
    assert readiness["path"] == "/v1/health" and readiness["port"] == "http"
    # Liveness must not depend on workers: /v1/health is 503 while none is live.
    assert "httpGet" not in web["livenessProbe"] and web["livenessProbe"]["tcpSocket"]["port"] == "http"
    # Django answers the probe only for a host in ALLOWED_HOSTS.
    probe_host = {header["name"]: header["value"] for header in readiness["httpHeaders"]}["Host"]
    allowed = env["ALLOWED_HOSTS"][1].split(",")
    assert probe_host in allowed and f"{FULLNAME}-web" in allowed and "$(POD_IP)" in allowed
    assert env["POD_IP"] == ("field", "status.podIP")
    [service] = find(docs, "Service", f"{FULLNAME}-web")
    pod_labels = pod(docs, "web")["metadata"]["labels"]
    assert selects(service["spec"]["selector"], pod_labels)
    assert service["spec"]["ports"][0]["targetPort"] in [port["name"] for port in web["ports"]]
    # Streams in flight get time to finish once the pod has left the Service.
    assert web["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "20"]
    assert pod(docs, "web")["spec"]["terminationGracePeriodSeconds"] > 20


def test_workers_get_a_gpu_and_are_ready_only_with_a_fresh_heartbeat():
    docs = render(REQUIRED)
    worker = container(docs, "worker")
    assert worker["command"] == ["python", "manage.py", "tts_worker", "--capacity", "0"]  # 0: the engines decide
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["readinessProbe"]["exec"]["command"] == ["python", "manage.py", "tts_worker_ready"]
    spec = pod(docs, "worker")["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    # Long enough for the SIGTERM drain of the streams in flight.
    assert spec["terminationGracePeriodSeconds"] >= 120
    env = effective_env(worker, docs)
    assert env["TTS_HOME"] == ("value", "/models")
    assert {"name": "models", "mountPath": "/models"} in worker["volumeMounts"]
    # A rolling update must not need a spare GPU.
    assert workload(docs, "worker")["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    [budget] = find(docs, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    selector = budget["spec"]["selector"]["matchLabels"]
    assert selects(selector, pod(docs, "worker")["metadata"]["labels"])
    assert not selects(selector, pod(docs, "web")["metadata"]["labels"])


def test_worker_replicas_gpus_engines_and_capacity_follow_the_values():
    docs = render(SCENARIOS["three workers with two GPUs"])
    assert workload(docs, "worker")["spec"]["replicas"] == 3
    worker = container(docs, "worker")
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert worker["command"][3:] == ["--capacity", "4", "--engines", "xtts"]


def test_cpu_workers_ask_for_no_gpu():
    docs = render(SCENARIOS["cpu workers"])
    worker = container(docs, "worker")
    assert "nvidia.com/gpu" not in worker["resources"].get("limits", {})
    assert "nvidia.com/gpu" not in worker["resources"].get("requests", {})
    assert "tolerations" not in pod(docs, "worker")["spec"]


def test_celery_processes_voices_and_exactly_one_beat_schedules_the_sweeps():
    docs = render(REQUIRED)
    assert container(docs, "celery")["command"][:4] == ["celery", "-A", "callwaiting", "worker"]
    beat = workload(docs, "celery-beat")
    assert container(docs, "celery-beat")["command"][:4] == ["celery", "-A", "callwaiting", "beat"]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"] == {"type": "Recreate"}


def test_migrations_run_as_a_hook_after_install_and_before_every_upgrade():
    docs = render(REQUIRED)
    job = workload(docs, "migrate")
    assert job["kind"] == "Job"
    # pre-install would run before the release's Secret, ConfigMap and bundled PostgreSQL exist.
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"
    assert "before-hook-creation" in job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    migrate = container(docs, "migrate")
    assert migrate["command"] == ["sh", "-c", "python manage.py migrate --noinput && python manage.py sync_voices"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert effective_env(migrate, docs)["DATABASE_URL"] == ("secret", FULLNAME, "DATABASE_URL")


# --- security -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scenario", ["defaults", "external services"])
def test_app_pods_run_as_uid_10001_on_a_read_only_root(scenario):
    docs = render(SCENARIOS[scenario])
    for component in APP_COMPONENTS:
        security = pod(docs, component)["spec"]["securityContext"]
        assert security["runAsUser"] == 10001 and security["runAsNonRoot"] is True
        main = container(docs, component)
        assert main["securityContext"]["readOnlyRootFilesystem"] is True
        assert main["securityContext"]["allowPrivilegeEscalation"] is False
        mounts = {mount["mountPath"] for mount in main["volumeMounts"]}
        assert {"/tmp", "/data"} <= mounts, component
    for component in ("postgresql", "redis"):
        if scenario == "defaults":
            assert pod(docs, component)["spec"]["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_credentials_reach_the_pods_from_a_secret_never_from_a_configmap(scenario):
    docs = render(SCENARIOS[scenario])
    secret_name = SCENARIOS[scenario].get("existingSecret", FULLNAME)
    for component in APP_COMPONENTS:
        env = effective_env(container(docs, component), docs)
        for name in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL"):
            assert env[name] == ("secret", secret_name, name), (component, name)
    for config_map in find(docs, "ConfigMap"):
        assert not set(config_map["data"]) & set(CREDENTIALS)
        assert SECRET_KEY not in yaml.safe_dump(config_map)


def test_the_metrics_token_goes_to_the_web_pods_through_the_secret_only():
    docs = render({**REQUIRED, "metricsToken": "m3tricsT0ken"})
    assert secret_data(docs)["METRICS_TOKEN"] == "m3tricsT0ken"
    assert effective_env(container(docs, "web"), docs)["METRICS_TOKEN"] == ("secret", FULLNAME, "METRICS_TOKEN")
    assert "m3tricsT0ken" not in yaml.safe_dump_all([doc for doc in docs if doc["kind"] != "Secret"])
    assert "METRICS_TOKEN" not in secret_data(render(REQUIRED))  # unset: only staff sessions read the metrics


def test_the_secret_holds_the_bundled_services_urls():
    docs = render(SCENARIOS["bundled with passwords and volumes"])
    data = secret_data(docs)
    assert data["SECRET_KEY"] == SECRET_KEY
    assert data["DATABASE_URL"] == f"postgres://callwaiting:pgPassword1@{FULLNAME}-postgresql:5432/callwaiting"
    assert data["REDIS_URL"] == f"redis://:redisPassword1@{FULLNAME}-redis:6379/0"
    assert data["POSTGRES_PASSWORD"] == "pgPassword1" and data["REDIS_PASSWORD"] == "redisPassword1"
    assert data["AWS_ACCESS_KEY_ID"] == "AKIAEXAMPLE" and data["AWS_SECRET_ACCESS_KEY"] == "s3secret"
    redis = container(docs, "redis")
    assert redis["args"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    assert effective_env(redis, docs)["REDIS_PASSWORD"] == ("secret", FULLNAME, "REDIS_PASSWORD")
    postgres = container(docs, "postgresql")
    assert effective_env(postgres, docs)["POSTGRES_PASSWORD"] == ("secret", FULLNAME, "POSTGRES_PASSWORD")
    # The passwords appear nowhere in clear text.
    plain = yaml.safe_dump_all([doc for doc in docs if doc["kind"] != "Secret"])
    assert "pgPassword1" not in plain and "redisPassword1" not in plain and SECRET_KEY not in plain


def test_disabling_the_bundled_databases_uses_the_external_urls():
    docs = render(EXTERNAL)
    assert not find(docs, "StatefulSet")
    assert not [doc for doc in docs if doc["metadata"]["name"].endswith(("-postgresql", "-redis"))]
    data = secret_data(docs)
    assert data["DATABASE_URL"] == EXTERNAL["externalDatabase"]["url"]
    assert data["REDIS_URL"] == EXTERNAL["externalRedis"]["url"]
    assert "POSTGRES_PASSWORD" not in data


def test_bundled_databases_are_statefulsets_of_the_official_images():
    docs = render(REQUIRED)
    assert container(docs, "postgresql")["image"] == "postgres:16"
    assert container(docs, "redis")["image"] == "redis:7"
    for name in ("postgresql", "redis"):
        [statefulset] = find(docs, "StatefulSet", f"{FULLNAME}-{name}")
        assert statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
        [service] = find(docs, "Service", f"{FULLNAME}-{name}")
        assert selects(service["spec"]["selector"], statefulset["spec"]["template"]["metadata"]["labels"])


def test_an_existing_secret_replaces_the_charts():
    docs = render(SCENARIOS["existing secret"])
    assert not find(docs, "Secret")
    assert effective_env(container(docs, "postgresql"), docs)["POSTGRES_PASSWORD"][1] == "tts-credentials"
    for component in ("web", "worker", "celery"):
        assert "checksum/secret" not in pod(docs, component)["metadata"]["annotations"]


def test_changing_the_settings_restarts_the_pods():
    before = render(REQUIRED)
    after = render({**REQUIRED, "config": {"LOG_LEVEL": "DEBUG"}})
    for component in ("web", "worker", "celery", "celery-beat"):
        checksums = [pod(docs, component)["metadata"]["annotations"]["checksum/config"] for docs in (before, after)]
        assert checksums[0] != checksums[1]


# --- ingress, storage, notes ---------------------------------------------------------------------------------------
def test_the_ingress_routes_to_the_web_service_and_its_host_is_allowed():
    docs = render(SCENARIOS["ingress"])
    [ingress] = find(docs, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "tts-tls", "hosts": ["tts.example.com"]}]
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    [rule] = ingress["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    [service] = find(docs, "Service", backend["name"])
    assert backend["port"]["name"] in [port["name"] for port in service["spec"]["ports"]]
    allowed = effective_env(container(docs, "web"), docs)["ALLOWED_HOSTS"][1].split(",")
    assert "tts.example.com" in allowed
    env = effective_env(container(docs, "worker"), docs)
    assert env["AWS_STORAGE_BUCKET_NAME"] == ("configmap", "voices")
    assert env["AWS_S3_ENDPOINT_URL"] == ("configmap", "https://minio.example.com")
    assert not find(render(REQUIRED), "Ingress")


def test_shared_media_and_the_model_cache_use_claims_when_persistence_is_on():
    docs = render(SCENARIOS["bundled with passwords and volumes"])
    claims = {claim["metadata"]["name"]: claim for claim in find(docs, "PersistentVolumeClaim")}
    assert claims[f"{FULLNAME}-media"]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claims[f"{FULLNAME}-media"]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for component in ("web", "worker", "celery"):
        volumes = {volume["name"]: volume for volume in pod(docs, component)["spec"]["volumes"]}
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] == f"{FULLNAME}-media"
    volumes = {volume["name"]: volume for volume in pod(docs, "worker")["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == f"{FULLNAME}-models"
    assert not find(render(REQUIRED), "PersistentVolumeClaim")


def test_notes_tell_how_to_reach_the_api_and_warn_about_unshared_media():
    notes = render_notes(REQUIRED)
    assert f"port-forward svc/{FULLNAME}-web 8000:80" in notes
    assert "WARNING: uploaded and cloned voices" in notes and "TTS_AGREE_TO_CPML" in notes
    notes = render_notes(SCENARIOS["ingress"])
    assert "https://tts.example.com/v1/health" in notes and "WARNING" not in notes


# --- values ---------------------------------------------------------------------------------------------------
# Variables the chart sets itself, and where an operator controls them instead of `config`.
CHART_MANAGED = {
    "HOST": "web command line", "PORT": "web.containerPort", "ALLOWED_HOSTS": "allowedHosts",
    "TTS_EMBEDDED_WORKER": "always 0 on web", "DATA_DIR": "the /data volume", "TTS_HOME": "the /models volume",
    **{name: "the Secret" for name in CREDENTIALS},
}


def documented_variables() -> set[str]:
    """Every variable in the README's configuration table and every one callwaiting/settings.py reads."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in table.splitlines():
        if line.startswith("|"):
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    settings_source = (ROOT / "callwaiting" / "settings.py").read_text()
    read = r'(?:os\.environ\.get|env_bool|env_int|env_float|env_list)\(\s*"([A-Z][A-Z0-9_]+)"'
    names |= set(re.findall(read, settings_source))
    return names


def test_every_documented_setting_can_be_set_through_values():
    names = documented_variables()
    assert {"TTS_ENGINES", "DATABASE_URL", "XTTS_MODEL_DIR", "AWS_STORAGE_BUCKET_NAME"} <= names
    free = sorted(names - set(CHART_MANAGED))
    docs = render({**REQUIRED, "config": {name: f"set-{name}" for name in free}})
    for component in APP_COMPONENTS:
        env = effective_env(container(docs, component), docs)
        assert {name: env.get(name) for name in free} == {name: ("configmap", f"set-{name}") for name in free}
    values_text = (CHART / "values.yaml").read_text()
    assert [name for name in names if name not in values_text] == []
    # What the chart manages, config cannot change.
    docs = render({**REQUIRED, "config": {"TTS_EMBEDDED_WORKER": "1", "DATA_DIR": "/other", "TTS_HOME": "/other"}})
    assert effective_env(container(docs, "web"), docs)["TTS_EMBEDDED_WORKER"] == ("value", "0")
    assert effective_env(container(docs, "worker"), docs)["TTS_HOME"] == ("value", "/models")
    assert effective_env(container(docs, "celery"), docs)["DATA_DIR"] == ("value", "/data")


def test_every_values_path_in_the_templates_exists_in_values_yaml():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    sources = {path.name: path.read_text() for path in (CHART / "templates").iterdir()}
    for filename, source in sources.items():
        for path in re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", source):
            node = values
            for key in path.strip(".").split("."):
                assert isinstance(node, dict) and key in node, f"{filename}: .Values{path} is not in values.yaml"
                node = node[key]
    # strict=True in render(): the paths reached through `with` and `range` exist as well.
    render(REQUIRED)


def test_every_value_in_values_yaml_is_used_by_a_template():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    source = "\n".join(path.read_text() for path in (CHART / "templates").iterdir())
    used_paths = set(re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", source))
    used_fields = set(re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)", source))

    def unused(node, path):
        for key, value in node.items():
            child = f"{path}.{key}"
            if child in used_paths:
                continue
            if not any(used.startswith(path) for used in used_paths) or key not in used_fields:
                yield child
            elif isinstance(value, dict) and path != ".config":
                yield from unused(value, child)

    assert list(unused(values, "")) == []
    assert all(isinstance(value, str) for value in values["config"].values()), "config values must be strings"


# --- the renderer stays honest ------------------------------------------------------------------------------------
def write_chart(directory: Path, template: str, values: str = "") -> Path:
    (directory / "templates").mkdir()
    (directory / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.0.1\n")
    (directory / "values.yaml").write_text(values)
    (directory / "templates" / "t.yaml").write_text(template)
    return directory


def render_one(tmp_path, template, values="") -> str:
    return render_chart(write_chart(tmp_path, template, values))["probe/templates/t.yaml"]


def test_the_renderer_refuses_what_it_does_not_implement_even_in_branches_not_taken(tmp_path):
    with pytest.raises(HelmTemplateError, match="function 'lookup' is not supported"):
        render_chart(write_chart(tmp_path, "{{ if false }}{{ lookup \"v1\" \"Secret\" \"ns\" \"x\" }}{{ end }}"))


def test_the_renderer_keeps_helms_number_and_comparison_rules(tmp_path):
    values = "size: 10485760\nreplicas: 3\n"
    assert render_one(tmp_path, "a: {{ .Values.size }}\nb: {{ .Values.replicas }}", values) == "a: 1.048576e+07\nb: 3"
    (tmp_path / "templates" / "t.yaml").write_text("{{ if eq .Values.replicas 3 }}x{{ end }}")
    with pytest.raises(HelmTemplateError, match="incompatible types for comparison"):
        render_chart(tmp_path)


def test_the_renderer_trims_whitespace_like_go(tmp_path):
    template = "a:\n  {{- if true }}\n  b: {{ \"x\" | quote }}\n  {{- end }}\n{{- /* gone */}}\nc: {{- \" d\" }}"
    assert render_one(tmp_path, template) == 'a:\n  b: "x"\nc: d'


# --- the real helm, where there is one ---------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("helm") is None, reason="no helm binary on PATH")
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_and_template_agree_with_the_renderer(scenario, tmp_path):
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(SCENARIOS[scenario]))
    subprocess.run(["helm", "lint", "--strict", str(CHART), "-f", str(values_file)], check=True, capture_output=True)
    helm = subprocess.run(
        ["helm", "template", RELEASE, str(CHART), "-f", str(values_file), "--namespace", "default"],
        check=True, capture_output=True, text=True,
    ).stdout

    def ordered(docs):
        return sorted(docs, key=lambda doc: (doc["kind"], doc["metadata"]["name"]))

    assert ordered(parse(helm)) == ordered(render(SCENARIOS[scenario]))
