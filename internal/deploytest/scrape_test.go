package deploytest_test

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/util/strutil"
	yaml2 "go.yaml.in/yaml/v2"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/largeforge/largeforge/pipeline"
)

// scrapeConfig is the part of prometheus.yml these tests read; relabel
// configs decode as Prometheus decodes them (its defaults included).
type scrapeConfig struct {
	ScrapeConfigs []struct {
		JobName             string `yaml:"job_name"`
		KubernetesSDConfigs []struct {
			Role       string `yaml:"role"`
			Namespaces struct {
				Names []string `yaml:"names"`
			} `yaml:"namespaces"`
		} `yaml:"kubernetes_sd_configs"`
		RelabelConfigs []*relabel.Config `yaml:"relabel_configs"`
		StaticConfigs  []struct {
			Targets []string          `yaml:"targets"`
			Labels  map[string]string `yaml:"labels"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

// podTargets are the targets Kubernetes pod discovery gives Prometheus for
// a pod of d in namespace ns: one per container port, with the pod's
// labels and annotations as __meta_ labels.
func podTargets(d *appsv1.Deployment, ns string) []labels.Labels {
	meta := map[string]string{
		"__meta_kubernetes_namespace": ns,
		"__meta_kubernetes_pod_name":  d.Name + "-0",
		"__scheme__":                  "http",
		"__metrics_path__":            "/metrics",
	}
	for k, v := range d.Spec.Template.Labels {
		meta["__meta_kubernetes_pod_label_"+strutil.SanitizeLabelName(k)] = v
	}
	for k, v := range d.Spec.Template.Annotations {
		meta["__meta_kubernetes_pod_annotation_"+strutil.SanitizeLabelName(k)] = v
	}
	var out []labels.Labels
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			m := map[string]string{"__address__": net.JoinHostPort("10.0.0.1", strconv.Itoa(int(p.ContainerPort)))}
			for k, v := range meta {
				m[k] = v
			}
			out = append(out, labels.FromMap(m))
		}
	}
	return out
}

// metricsPort is the port a container serves /metrics on: the gateway's
// --http, every other process's LARGEFORGE_METRICS_ADDR (the ConfigMap's).
func metricsPort(t *testing.T, c corev1.Container, config map[string]string) string {
	t.Helper()
	addr := config["LARGEFORGE_METRICS_ADDR"]
	if c.Args[0] == "gateway" {
		addr = flagValue(c.Args, "--http")
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%v: metrics address %q: %v", c.Args, addr, err)
	}
	return port
}

// TestScrapeTargets applies prometheus.yml's Kubernetes relabelling to the
// targets discovery gives for each Deployment of the base: each is kept,
// scraped at the port and path its process serves /metrics on, with its
// component and the namespace prometheus-adapter's namespaced external rule
// matches (without it the infer HPA gets no metric). The one-machine job
// scrapes up's metrics address only (the gateway it runs shares that
// registry).
func TestScrapeTargets(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(promDir, "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg scrapeConfig
	if err := yaml2.Unmarshal(data, &cfg); err != nil { // the rest is promtool's (TestScrapeConfig)
		t.Fatal(err)
	}
	k, ms := loadKustomization(t, filepath.Join(kubeDir, "base"))
	config := map[string]string{}
	var deployments []*appsv1.Deployment
	for _, m := range ms {
		switch o := m.obj.(type) {
		case *corev1.ConfigMap:
			if o.Name == "largeforge-config" {
				config = o.Data
			}
		case *appsv1.Deployment:
			deployments = append(deployments, o)
		}
	}
	if len(deployments) == 0 {
		t.Fatal("no Deployments in the base")
	}
	kube, static := 0, 0
	for _, job := range cfg.ScrapeConfigs {
		for _, cfgs := range job.RelabelConfigs {
			if err := cfgs.Validate(model.UTF8Validation); err != nil {
				t.Fatalf("job %s: %v", job.JobName, err)
			}
		}
		for _, sd := range job.KubernetesSDConfigs {
			kube++
			if sd.Role != "pod" || !slices.Contains(sd.Namespaces.Names, k.Namespace) {
				t.Errorf("job %s discovers %s in %v: want pods of %s", job.JobName, sd.Role, sd.Namespaces.Names, k.Namespace)
			}
			for _, d := range deployments {
				c := d.Spec.Template.Spec.Containers[0]
				var kept []labels.Labels
				for _, tg := range podTargets(d, k.Namespace) {
					lb := labels.NewBuilder(tg)
					if relabel.ProcessBuilder(lb, job.RelabelConfigs...) {
						kept = append(kept, lb.Labels())
					}
				}
				if len(kept) != 1 {
					t.Errorf("%s: %d targets kept: want one, its metrics port", d.Name, len(kept))
					continue
				}
				got := kept[0]
				_, port, _ := net.SplitHostPort(got.Get("__address__"))
				if want := metricsPort(t, c, config); port != want || got.Get("__metrics_path__") != "/metrics" {
					t.Errorf("%s scraped at %s%s: its process serves /metrics on port %s", d.Name, got.Get("__address__"), got.Get("__metrics_path__"), want)
				}
				if got.Get("namespace") != k.Namespace {
					t.Errorf("%s: namespace label %q, want %q (prometheus-adapter's external rule matches it)", d.Name, got.Get("namespace"), k.Namespace)
				}
				if got.Get("component") != d.Spec.Template.Labels["app.kubernetes.io/component"] {
					t.Errorf("%s: component %q", d.Name, got.Get("component"))
				}
			}
		}
		for _, s := range job.StaticConfigs {
			static++
			if !slices.Equal(s.Targets, []string{"127.0.0.1:9464"}) {
				t.Errorf("job %s scrapes %v: want up's --metrics-addr 127.0.0.1:9464 alone (its gateway's /metrics is the same registry; an --http up was not given is a target down)", job.JobName, s.Targets)
			}
		}
	}
	if kube == 0 || static == 0 {
		t.Fatalf("%d Kubernetes and %d static scrape configs: want both", kube, static)
	}
}

// TestAdapterRule: prometheus-adapter's external rule serves the metric the
// infer HPA names, grouped by the label its selector matches, and is
// namespaced (so the series need the namespace label TestScrapeTargets
// checks).
func TestAdapterRule(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(promDir, "adapter-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Rules struct {
			External []struct {
				SeriesQuery string `json:"seriesQuery"`
				Resources   struct {
					Namespaced *bool `json:"namespaced"`
					Overrides  map[string]struct {
						Resource string `json:"resource"`
					} `json:"overrides"`
				} `json:"resources"`
				Name struct {
					Matches string `json:"matches"`
					As      string `json:"as"`
				} `json:"name"`
				MetricsQuery string `json:"metricsQuery"`
			} `json:"external"`
		} `json:"rules"`
	}
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Rules.External) != 1 {
		t.Fatalf("%d external rules: want one", len(v.Rules.External))
	}
	r := v.Rules.External[0]
	if !strings.HasPrefix(r.SeriesQuery, pipeline.MetricConsumerLag+"{") || r.Name.As != pipeline.MetricConsumerLag {
		t.Errorf("rule serves %q as %q: want %s (infer-hpa.yaml's metric)", r.SeriesQuery, r.Name.As, pipeline.MetricConsumerLag)
	}
	if !strings.Contains(r.MetricsQuery, "by (durable)") || !strings.Contains(r.MetricsQuery, "<<.LabelMatchers>>") {
		t.Errorf("metricsQuery %q: want the HPA's selector (<<.LabelMatchers>>) and one value per durable", r.MetricsQuery)
	}
	if (r.Resources.Namespaced == nil || *r.Resources.Namespaced) && r.Resources.Overrides["namespace"].Resource != "namespace" {
		t.Errorf("a namespaced rule without the namespace override: %+v", r.Resources)
	}
}
