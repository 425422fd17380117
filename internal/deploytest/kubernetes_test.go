package deploytest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/largeforge/largeforge/consumers/infer"
	"github.com/largeforge/largeforge/pipeline"
)

const kubeDir = "../../deploy/kubernetes"

// kustomization is the part of kustomize's Kustomization the manifests use
// (decoded strictly: a field outside it is a mistake here).
type kustomization struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors"`
	} `json:"labels,omitempty"`
	Resources []string `json:"resources"`
	Images    []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images,omitempty"`
	Patches []struct {
		Path string `json:"path"`
	} `json:"patches,omitempty"`
}

// manifest is one decoded YAML document of a manifest file.
type manifest struct {
	file string
	kind string
	name string
	obj  any
}

// newObject returns the typed k8s.io/api object of apiVersion and kind.
func newObject(apiVersion, kind string) (any, error) {
	switch apiVersion + " " + kind {
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1 Secret":
		return &corev1.Secret{}, nil
	case "v1 Namespace":
		return &corev1.Namespace{}, nil
	case "batch/v1 Job":
		return &batchv1.Job{}, nil
	case "autoscaling/v2 HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, nil
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	}
	return nil, fmt.Errorf("apiVersion %q kind %q: not a type these manifests use", apiVersion, kind)
}

// decodeStrict decodes the YAML document doc into obj, refusing unknown
// and duplicate fields.
func decodeStrict(doc []byte, obj any) error {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	return dec.Decode(obj)
}

// documents splits a YAML file into its non-empty documents.
func documents(data []byte) [][]byte {
	var out [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
		trimmed := regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(d, "")
		if strings.TrimSpace(trimmed) != "" {
			out = append(out, []byte(d))
		}
	}
	return out
}

// loadKustomization decodes dir/kustomization.yaml strictly and every
// resource and patch it names (each must exist), recursing into bases.
func loadKustomization(t *testing.T, dir string) (kustomization, []manifest) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := decodeStrict(data, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Fatalf("%s/kustomization.yaml: %s %s", dir, k.APIVersion, k.Kind)
	}
	var out []manifest
	files := slices.Clone(k.Resources)
	for _, p := range k.Patches {
		files = append(files, p.Path)
	}
	for _, r := range files {
		path := filepath.Join(dir, r)
		st, err := os.Stat(path)
		if err != nil {
			t.Fatalf("%s/kustomization.yaml names %s: %v", dir, r, err)
		}
		if st.IsDir() {
			_, ms := loadKustomization(t, path)
			out = append(out, ms...)
			continue
		}
		out = append(out, decodeFile(t, path)...)
	}
	return k, out
}

func decodeFile(t *testing.T, path string) []manifest {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []manifest
	for i, doc := range documents(data) {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatalf("%s document %d: %v", path, i+1, err)
		}
		obj, err := newObject(head.APIVersion, head.Kind)
		if err != nil {
			t.Fatalf("%s document %d: %v", path, i+1, err)
		}
		if err := decodeStrict(doc, obj); err != nil {
			t.Fatalf("%s document %d (%s %s): %v", path, i+1, head.Kind, head.Metadata.Name, err)
		}
		out = append(out, manifest{file: path, kind: head.Kind, name: head.Metadata.Name, obj: obj})
	}
	return out
}

// TestManifestsDecodeStrictly: every manifest of the base and the overlay
// decodes against k8s.io/api's types with no unknown field, and every file
// a kustomization names exists.
func TestManifestsDecodeStrictly(t *testing.T) {
	for _, dir := range []string{"base", "overlays/production"} {
		t.Run(dir, func(t *testing.T) {
			_, ms := loadKustomization(t, filepath.Join(kubeDir, dir))
			if len(ms) == 0 {
				t.Fatal("no manifests")
			}
		})
	}
}

// TestStrictDecoderRefusesUnknownFields: the check above would catch a
// misspelt field.
func TestStrictDecoderRefusesUnknownFields(t *testing.T) {
	doc := []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replicas: 1\n  replica: 2\n")
	if err := decodeStrict(doc, &appsv1.Deployment{}); err == nil || !strings.Contains(err.Error(), "replica") {
		t.Fatalf("misspelt field: %v", err)
	}
}

// TestBaseWorkloads checks what the base promises: each process on its
// role's credential with /ready and /health probes, resources, non-root,
// the image the Dockerfile builds; one infer Deployment per model with an
// HPA on its durable's lag; the ConfigMaps and Secrets they name exist.
func TestBaseWorkloads(t *testing.T) {
	k, ms := loadKustomization(t, filepath.Join(kubeDir, "base"))
	if len(k.Images) != 1 || k.Images[0].Name != "largeforge" {
		t.Fatalf("images %+v: want the one image largeforge", k.Images)
	}
	roles := roleUsers(t)
	configs, secrets := map[string]bool{}, map[string]*corev1.Secret{}
	deployments := map[string]*appsv1.Deployment{}
	var pods []struct {
		name string
		spec corev1.PodSpec
	}
	var hpas []*autoscalingv2.HorizontalPodAutoscaler
	for _, m := range ms {
		switch o := m.obj.(type) {
		case *corev1.ConfigMap:
			configs[o.Name] = true
		case *corev1.Secret:
			secrets[o.Name] = o
		case *appsv1.Deployment:
			deployments[o.Name] = o
			pods = append(pods, struct {
				name string
				spec corev1.PodSpec
			}{o.Name, o.Spec.Template.Spec})
		case *batchv1.Job:
			pods = append(pods, struct {
				name string
				spec corev1.PodSpec
			}{o.Name, o.Spec.Template.Spec})
		case *autoscalingv2.HorizontalPodAutoscaler:
			hpas = append(hpas, o)
		}
	}
	for _, want := range []string{"gateway", "results-sink", "dataset-sink", "train-worker"} {
		if deployments[want] == nil {
			t.Errorf("no Deployment %s", want)
		}
	}
	passwords := secrets["largeforge-nats-passwords"]
	if passwords == nil {
		t.Fatal("no Secret largeforge-nats-passwords")
	}
	hashes := secrets["largeforge-nats-hashes"]
	for _, r := range roles {
		if _, ok := passwords.StringData[r]; !ok {
			t.Errorf("largeforge-nats-passwords has no password for role %s", r)
		}
		if _, ok := hashes.StringData["LF_"+strings.ToUpper(r)+"_PASSWORD_HASH"]; !ok {
			t.Errorf("largeforge-nats-hashes has no hash for role %s", r)
		}
	}
	for _, p := range pods {
		t.Run(p.name, func(t *testing.T) {
			sc := p.spec.SecurityContext
			if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
				t.Errorf("pod does not run as non-root")
			}
			if len(p.spec.Containers) != 1 {
				t.Fatalf("%d containers", len(p.spec.Containers))
			}
			c := p.spec.Containers[0]
			if c.Image != "largeforge" {
				t.Errorf("image %q, want largeforge (the Dockerfile's, named by the kustomization's images)", c.Image)
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("resources %+v: want cpu and memory requests and a memory limit", c.Resources)
			}
			role := flagValue(c.Args, "--nats-user")
			if !slices.Contains(roles, role) {
				t.Errorf("--nats-user %q: not a role of deploy/nats-roles.conf", role)
			}
			if key := passwordKey(p.spec); key != role {
				t.Errorf("mounts the password of %q, runs as %q", key, role)
			}
			for _, e := range c.EnvFrom {
				if e.ConfigMapRef != nil && !configs[e.ConfigMapRef.Name] {
					t.Errorf("ConfigMap %s not in the base", e.ConfigMapRef.Name)
				}
			}
			for _, v := range p.spec.Volumes {
				if v.Secret != nil && secrets[v.Secret.SecretName] == nil {
					t.Errorf("Secret %s not in the base", v.Secret.SecretName)
				}
			}
			if c.Args[0] == "topology" { // a Job: no probes
				return
			}
			if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/ready" {
				t.Errorf("readiness probe %+v: want GET /ready", c.ReadinessProbe)
			}
			if c.LivenessProbe == nil || (c.LivenessProbe.TCPSocket == nil && (c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/health")) {
				t.Errorf("liveness probe %+v: want GET /health (or the gateway's port)", c.LivenessProbe)
			}
			if c.Args[0] == "worker" && c.ReadinessProbe.HTTPGet.Port.String() != "metrics" {
				t.Errorf("a worker's probes are on its metrics port (LARGEFORGE_METRICS_ADDR)")
			}
		})
	}
	// One infer Deployment per model, each scaled by an HPA on its lag.
	scaled := map[string]bool{}
	for _, h := range hpas {
		d := deployments[h.Spec.ScaleTargetRef.Name]
		if d == nil || h.Spec.ScaleTargetRef.Kind != "Deployment" {
			t.Fatalf("HPA %s scales %+v: no such Deployment", h.Name, h.Spec.ScaleTargetRef)
		}
		models := flagValues(d.Spec.Template.Spec.Containers[0].Args, "--model")
		if len(models) != 1 {
			t.Fatalf("%s serves %v: want one model per Deployment", d.Name, models)
		}
		if len(h.Spec.Metrics) != 1 || h.Spec.Metrics[0].External == nil {
			t.Fatalf("HPA %s: want one External metric", h.Name)
		}
		m := h.Spec.Metrics[0].External.Metric
		if m.Name != pipeline.MetricConsumerLag || m.Selector == nil || m.Selector.MatchLabels["durable"] != infer.Durable(models[0]) {
			t.Errorf("HPA %s on %s %v: want %s of durable %s", h.Name, m.Name, m.Selector, pipeline.MetricConsumerLag, infer.Durable(models[0]))
		}
		scaled[d.Name] = true
	}
	for name, d := range deployments {
		if flagValue(d.Spec.Template.Spec.Containers[0].Args, "--role") == "infer" && !scaled[name] {
			t.Errorf("infer Deployment %s has no HPA", name)
		}
	}
}

// TestDockerfile: multi-stage, a static binary, a non-root user, the
// entrypoint the manifests' args follow.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	if n := len(regexp.MustCompile(`(?m)^FROM `).FindAllString(s, -1)); n < 2 {
		t.Errorf("%d FROM lines: want a multi-stage build", n)
	}
	for _, want := range []string{"CGO_ENABLED=0", "./cmd/largeforge", `ENTRYPOINT ["/usr/local/bin/largeforge"]`} {
		if !strings.Contains(s, want) {
			t.Errorf("Dockerfile lacks %s", want)
		}
	}
	user := regexp.MustCompile(`(?m)^USER (\S+)`).FindStringSubmatch(s)
	if user == nil || strings.HasPrefix(user[1], "0") || strings.HasPrefix(user[1], "root") {
		t.Errorf("USER %v: want a non-root user", user)
	}
}

// TestNATSValues: the NATS Helm values (not rendered here) ask for a
// three-node JetStream cluster on persistent volumes, with deploy/nats-roles.conf
// included and each role's hash from the Secret the base declares.
func TestNATSValues(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(kubeDir, "nats/values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Config struct {
			Cluster struct {
				Enabled  bool `json:"enabled"`
				Replicas int  `json:"replicas"`
			} `json:"cluster"`
			JetStream struct {
				Enabled   bool `json:"enabled"`
				FileStore struct {
					Enabled bool   `json:"enabled"`
					MaxSize string `json:"maxSize"`
					PVC     struct {
						Enabled bool   `json:"enabled"`
						Size    string `json:"size"`
					} `json:"pvc"`
				} `json:"fileStore"`
			} `json:"jetstream"`
			Merge map[string]any `json:"merge"`
		} `json:"config"`
		Container struct {
			Env map[string]struct {
				ValueFrom struct {
					SecretKeyRef struct{ Name, Key string } `json:"secretKeyRef"`
				} `json:"valueFrom"`
			} `json:"env"`
		} `json:"container"`
	}
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	c := v.Config
	if !c.Cluster.Enabled || c.Cluster.Replicas != 3 || !c.JetStream.Enabled || !c.JetStream.FileStore.Enabled || !c.JetStream.FileStore.PVC.Enabled || c.JetStream.FileStore.PVC.Size == "" {
		t.Errorf("config %+v: want a 3-node JetStream cluster on persistent volumes", c)
	}
	if inc, _ := c.Merge["$include"].(string); !strings.HasSuffix(inc, "nats-roles.conf") {
		t.Errorf("config.merge.$include %q: want deploy/nats-roles.conf", inc)
	}
	for _, r := range roleUsers(t) {
		name := "LF_" + strings.ToUpper(r) + "_PASSWORD_HASH"
		ref := v.Container.Env[name].ValueFrom.SecretKeyRef
		if ref.Name != "largeforge-nats-hashes" || ref.Key != name {
			t.Errorf("container.env %s: %+v, want the Secret largeforge-nats-hashes", name, ref)
		}
	}
}

// roleUsers are the users of deploy/nats-roles.conf.
func roleUsers(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("../../deploy/nats-roles.conf")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range regexp.MustCompile(`(?m)^\s*\{ user: (\w+),`).FindAllStringSubmatch(string(data), -1) {
		out = append(out, m[1])
	}
	if len(out) < 8 {
		t.Fatalf("%d users in deploy/nats-roles.conf", len(out))
	}
	return out
}

// passwordKey is the key of largeforge-nats-passwords a pod mounts.
func passwordKey(spec corev1.PodSpec) string {
	for _, v := range spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == "largeforge-nats-passwords" && len(v.Secret.Items) == 1 {
			return v.Secret.Items[0].Key
		}
	}
	return ""
}

func flagValues(args []string, flag string) []string {
	var out []string
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			out = append(out, args[i+1])
		} else if v, ok := strings.CutPrefix(a, flag+"="); ok {
			out = append(out, v)
		}
	}
	return out
}

func flagValue(args []string, flag string) string {
	if v := flagValues(args, flag); len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}
