package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v4"

	"github.com/dmfexport/dmfexport/dmf"
	"github.com/dmfexport/dmfexport/jobs"
)

// The parts of the Kubernetes objects the manifests hold that the test
// reads.
type (
	k8sObject struct {
		APIVersion string            `yaml:"apiVersion"`
		Kind       string            `yaml:"kind"`
		Metadata   k8sMeta           `yaml:"metadata"`
		Data       map[string]string `yaml:"data"`       // ConfigMap
		StringData map[string]string `yaml:"stringData"` // Secret
		Resources  []string          `yaml:"resources"`  // Kustomization
		file       string
		node       *yaml.Node
	}
	k8sMeta struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	}
	labelSelector struct {
		MatchLabels      map[string]string `yaml:"matchLabels"`
		MatchExpressions []struct {
			Key      string   `yaml:"key"`
			Operator string   `yaml:"operator"`
			Values   []string `yaml:"values"`
		} `yaml:"matchExpressions"`
	}
	deployment struct {
		Spec struct {
			Replicas int           `yaml:"replicas"`
			Selector labelSelector `yaml:"selector"`
			Template struct {
				Metadata k8sMeta `yaml:"metadata"`
				Spec     podSpec `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	podSpec struct {
		TerminationGracePeriodSeconds *int `yaml:"terminationGracePeriodSeconds"`
		SecurityContext               struct {
			RunAsNonRoot *bool `yaml:"runAsNonRoot"`
			RunAsUser    *int  `yaml:"runAsUser"`
			RunAsGroup   *int  `yaml:"runAsGroup"`
		} `yaml:"securityContext"`
		Containers []container `yaml:"containers"`
		Volumes    []struct {
			Name      string `yaml:"name"`
			ConfigMap *struct {
				Name  string `yaml:"name"`
				Items []struct {
					Key  string `yaml:"key"`
					Path string `yaml:"path"`
				} `yaml:"items"`
			} `yaml:"configMap"`
			EmptyDir *struct{} `yaml:"emptyDir"`
		} `yaml:"volumes"`
	}
	container struct {
		Name  string   `yaml:"name"`
		Image string   `yaml:"image"`
		Args  []string `yaml:"args"`
		Env   []struct {
			Name      string `yaml:"name"`
			Value     string `yaml:"value"`
			ValueFrom *struct {
				SecretKeyRef *struct {
					Name string `yaml:"name"`
					Key  string `yaml:"key"`
				} `yaml:"secretKeyRef"`
			} `yaml:"valueFrom"`
		} `yaml:"env"`
		Ports []struct {
			Name          string `yaml:"name"`
			ContainerPort int    `yaml:"containerPort"`
		} `yaml:"ports"`
		LivenessProbe   *probe `yaml:"livenessProbe"`
		ReadinessProbe  *probe `yaml:"readinessProbe"`
		SecurityContext struct {
			AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
			ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
			Capabilities             struct {
				Drop []string `yaml:"drop"`
			} `yaml:"capabilities"`
		} `yaml:"securityContext"`
		VolumeMounts []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
		} `yaml:"volumeMounts"`
	}
	probe struct {
		HTTPGet *struct {
			Path string `yaml:"path"`
			Port any    `yaml:"port"` // a number or a port's name
		} `yaml:"httpGet"`
	}
	service struct {
		Spec struct {
			Selector map[string]string `yaml:"selector"`
			Ports    []struct {
				Name       string `yaml:"name"`
				Port       int    `yaml:"port"`
				TargetPort any    `yaml:"targetPort"`
			} `yaml:"ports"`
		} `yaml:"spec"`
	}
	selectorSpec struct { // PodDisruptionBudget, ServiceMonitor
		Spec struct {
			Selector  labelSelector `yaml:"selector"`
			Endpoints []struct {
				Port string `yaml:"port"`
				Path string `yaml:"path"`
			} `yaml:"endpoints"`
		} `yaml:"spec"`
	}
)

// matches reports whether the selector selects labels.
func (s labelSelector) matches(labels map[string]string) bool {
	if len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0 {
		return false
	}
	for k, v := range s.MatchLabels {
		if labels[k] != v {
			return false
		}
	}
	for _, e := range s.MatchExpressions {
		v, ok := labels[e.Key]
		switch e.Operator {
		case "In":
			if !ok || !slices.Contains(e.Values, v) {
				return false
			}
		case "Exists":
			if !ok {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func subset(sub, of map[string]string) bool {
	for k, v := range sub {
		if of[k] != v {
			return false
		}
	}
	return len(sub) > 0
}

// loadManifests reads every object of every YAML file in dir.
func loadManifests(t *testing.T, dir string) []*k8sObject {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	var objs []*k8sObject
	for _, f := range files {
		objs = append(objs, decodeObjects(t, f, readFile(t, f))...)
	}
	return objs
}

func decodeObjects(t *testing.T, file string, data []byte) []*k8sObject {
	t.Helper()
	var objs []*k8sObject
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		o := &k8sObject{file: filepath.Base(file), node: &n}
		if err := n.Decode(o); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if o.Kind == "" {
			t.Fatalf("%s: an object without kind", file)
		}
		objs = append(objs, o)
	}
	return objs
}

func readFile(t *testing.T, f string) []byte {
	t.Helper()
	data, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func (o *k8sObject) decode(t *testing.T, v any) {
	t.Helper()
	if err := o.node.Decode(v); err != nil {
		t.Fatalf("%s: %s %s: %v", o.file, o.Kind, o.Metadata.Name, err)
	}
}

func (o *k8sObject) String() string { return o.file + ": " + o.Kind + " " + o.Metadata.Name }

// k8sWorkloads are the Deployments the manifests must hold.
var k8sWorkloads = []struct {
	name, command string
	port          int
	replicas      int
}{
	// Two replicas on one Azure Blob store: leases make that safe.
	{"dmfexport", "run", MetricsPort, 2},
	{"dmfexport-sink", "sink", SinkMetricsPort, 2},
}

// TestKubernetesManifests holds deploy/kubernetes against the code: the
// image, the commands and flags the binary takes, the ports and probe
// paths it serves (asked of the running binary), the configuration in the
// ConfigMap (loaded by the configuration loader, every ${VAR} it names
// given by the container's environment from a Secret), and the Services,
// PodDisruptionBudgets and ServiceMonitor selecting what they should.
func TestKubernetesManifests(t *testing.T) {
	objs := loadManifests(t, "kubernetes")
	byKind := map[string][]*k8sObject{}
	for _, o := range objs {
		byKind[o.Kind] = append(byKind[o.Kind], o)
	}
	find := func(kind, name string) *k8sObject {
		for _, o := range byKind[kind] {
			if o.Metadata.Name == name {
				return o
			}
		}
		return nil
	}

	t.Run("kustomization", func(t *testing.T) {
		if len(byKind["Kustomization"]) != 1 {
			t.Fatalf("%d Kustomizations, want 1", len(byKind["Kustomization"]))
		}
		var files []string
		for _, o := range objs {
			if o.Kind != "Kustomization" && o.Kind != "Secret" && !slices.Contains(files, o.file) {
				files = append(files, o.file)
			}
		}
		slices.Sort(files)
		if got := slices.Sorted(slices.Values(byKind["Kustomization"][0].Resources)); !slices.Equal(got, files) {
			t.Errorf("kustomization.yaml lists %q, want every manifest but the Secrets' example: %q", got, files)
		}
		if _, err := exec.LookPath("kubectl"); err != nil {
			t.Log("kubectl is not installed: the kustomization is not built")
			return
		}
		out, err := exec.CommandContext(t.Context(), "kubectl", "kustomize", "kubernetes").Output()
		if err != nil {
			var stderr []byte
			ee := &exec.ExitError{}
			if errors.As(err, &ee) {
				stderr = ee.Stderr
			}
			t.Fatalf("kubectl kustomize deploy/kubernetes: %v\n%s", err, stderr)
		}
		var want, got []string
		for _, o := range objs {
			if o.Kind != "Kustomization" && o.Kind != "Secret" {
				want = append(want, o.Kind+"/"+o.Metadata.Name)
			}
		}
		for _, o := range decodeObjects(t, "kubectl kustomize", out) {
			got = append(got, o.Kind+"/"+o.Metadata.Name)
		}
		if !equalSets(got, want) {
			t.Errorf("kubectl kustomize builds %q, want %q", got, want)
		}
	})

	bin := testBinary(t)
	for _, w := range k8sWorkloads {
		t.Run(w.name, func(t *testing.T) {
			o := find("Deployment", w.name)
			if o == nil {
				t.Fatalf("no Deployment %s", w.name)
			}
			var d deployment
			o.decode(t, &d)
			pod := d.Spec.Template.Spec
			podLabels := d.Spec.Template.Metadata.Labels
			if d.Spec.Replicas != w.replicas {
				t.Errorf("%s: replicas %d, want %d", o, d.Spec.Replicas, w.replicas)
			}
			if !d.Spec.Selector.matches(podLabels) {
				t.Errorf("%s: the selector %v does not select the pod's labels %v", o, d.Spec.Selector, podLabels)
			}
			if len(pod.Containers) != 1 {
				t.Fatalf("%s: %d containers, want 1", o, len(pod.Containers))
			}
			c := pod.Containers[0]
			repo := c.Image
			if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
				repo = repo[:i]
			}
			if repo != ImageName {
				t.Errorf("%s: image %s, want %s", o, c.Image, ImageName)
			}

			// The command and its flags are the binary's.
			if len(c.Args) == 0 || c.Args[0] != w.command {
				t.Fatalf("%s: args %q, want %s first", o, c.Args, w.command)
			}
			if out, err := exec.CommandContext(t.Context(), bin, append(slices.Clone(c.Args), "--help")...).CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "Usage: dmfexport "+w.command) {
				t.Errorf("%s: dmfexport %s --help: %v\n%s", o, strings.Join(c.Args, " "), err, out)
			}
			listen, _ := flagValue(c.Args, "listen")
			if listen != fmt.Sprintf(":%d", w.port) {
				t.Errorf("%s: --listen %q, want :%d (all interfaces, for the kubelet's probes and the scrapes)", o, listen, w.port)
			}
			ports := map[string]int{}
			for _, p := range c.Ports {
				ports[p.Name] = p.ContainerPort
			}
			if ports["metrics"] != w.port {
				t.Errorf("%s: container port metrics is %d, want %d", o, ports["metrics"], w.port)
			}
			portOf := func(p any) int {
				switch v := p.(type) {
				case int:
					return v
				case string:
					return ports[v]
				}
				return 0
			}
			probes := map[string]string{}
			for kind, p := range map[string]*probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
				if p == nil || p.HTTPGet == nil {
					t.Errorf("%s: no %s probe over HTTP", o, kind)
					continue
				}
				if got := portOf(p.HTTPGet.Port); got != w.port {
					t.Errorf("%s: %s probe on port %v (%d), want %d", o, kind, p.HTTPGet.Port, got, w.port)
				}
				probes[kind] = p.HTTPGet.Path
			}
			if probes["liveness"] != "/healthz" || probes["readiness"] != "/readyz" {
				t.Errorf("%s: probes %v, want liveness /healthz and readiness /readyz", o, probes)
			}

			// Not root, nothing to gain, nothing written but /tmp.
			sc := pod.SecurityContext
			if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != UID {
				t.Errorf("%s: pod securityContext wants runAsNonRoot: true and runAsUser: %d (the image's user)", o, UID)
			}
			csc := c.SecurityContext
			if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation || csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem || !slices.Contains(csc.Capabilities.Drop, "ALL") {
				t.Errorf("%s: container securityContext wants allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities drop ALL", o)
			}
			mounts := map[string]string{}
			for _, m := range c.VolumeMounts {
				mounts[m.MountPath] = m.Name
			}
			emptyDirs := map[string]bool{}
			configMaps := map[string]string{} // volume → ConfigMap
			items := map[string]map[string]string{}
			for _, v := range pod.Volumes {
				if v.EmptyDir != nil {
					emptyDirs[v.Name] = true
				}
				if v.ConfigMap != nil {
					configMaps[v.Name] = v.ConfigMap.Name
					items[v.Name] = map[string]string{}
					for _, it := range v.ConfigMap.Items {
						items[v.Name][it.Path] = it.Key
					}
				}
			}
			if !emptyDirs[mounts["/tmp"]] {
				t.Errorf("%s: no emptyDir at /tmp: with a read-only root the binary cannot write its temporary files (packages)", o)
			}
			if w.command == "run" {
				stop := 5 * time.Minute // run's default
				if v, ok := flagValue(c.Args, "stop-timeout"); ok {
					var err error
					if stop, err = time.ParseDuration(v); err != nil {
						t.Errorf("%s: --stop-timeout %q: %v", o, v, err)
					}
				}
				if g := pod.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= stop {
					t.Errorf("%s: terminationGracePeriodSeconds %v, want more than --stop-timeout %s so runs reach a safe point", o, g, stop)
				}
			}

			// The configuration: the file DMFEXPORT_CONFIG names, from the
			// ConfigMap mounted there, loads with the container's
			// environment, each ${VAR} from a Secret.
			env := map[string]string{}
			secretRefs := map[string]string{}
			for _, e := range c.Env {
				switch {
				case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
					ref := e.ValueFrom.SecretKeyRef
					env[e.Name] = "dummy-" + strings.ToLower(e.Name)
					secretRefs[e.Name] = ref.Name + "/" + ref.Key
					sec := find("Secret", ref.Name)
					if sec == nil {
						t.Errorf("%s: env %s from Secret %s, which secret.example.yaml does not show", o, e.Name, ref.Name)
					} else if _, ok := sec.StringData[ref.Key]; !ok {
						t.Errorf("%s: env %s from key %s of Secret %s, which secret.example.yaml does not show", o, e.Name, ref.Key, ref.Name)
					}
				default:
					env[e.Name] = e.Value
				}
			}
			cfgPath := env["DMFEXPORT_CONFIG"]
			if cfgPath == "" {
				t.Fatalf("%s: no DMFEXPORT_CONFIG in the container's env", o)
			}
			vol := mounts[path.Dir(cfgPath)]
			cmName, key := configMaps[vol], path.Base(cfgPath)
			if k, ok := items[vol][key]; ok {
				key = k
			} else if len(items[vol]) > 0 {
				t.Fatalf("%s: the volume at %s does not hold %s", o, path.Dir(cfgPath), key)
			}
			cm := find("ConfigMap", cmName)
			if cm == nil || cm.Data[key] == "" {
				t.Fatalf("%s: DMFEXPORT_CONFIG=%s, but no ConfigMap key is mounted there (volume %q, ConfigMap %q, key %q)", o, cfgPath, vol, cmName, key)
			}
			looked := map[string]bool{}
			cfg, err := jobs.ParseConfig(cfgPath, []byte(cm.Data[key]), func(name string) (string, bool) {
				looked[name] = true
				v, ok := env[name]
				return v, ok
			})
			if err != nil {
				t.Fatalf("%s: ConfigMap %s key %s, loaded with the container's env: %v", o, cmName, key, err)
			}
			for name, ref := range secretRefs {
				if !looked[name] {
					t.Errorf("%s: env %s (Secret %s) is not named in %s", o, name, ref, key)
				}
			}
			switch w.command {
			case "run":
				if len(cfg.Exports) == 0 {
					t.Errorf("%s: %s has no exports", o, key)
				}
				for _, e := range cfg.Exports {
					if e.Store.Type != "azblob" {
						t.Errorf("%s: export %s has a %s store: %d replicas share one Azure Blob store", o, e.Name, e.Store.Type, w.replicas)
					}
					if n := max(e.FO.MaxConcurrentExports, 1) * w.replicas; e.FO.MaxConcurrentExports == 0 || n > jobs.DefaultMaxConcurrentExports {
						t.Errorf("%s: export %s: fo.max_concurrent_exports %d × %d replicas: want at most %d in flight in F&O", o, e.Name, e.FO.MaxConcurrentExports, w.replicas, jobs.DefaultMaxConcurrentExports)
					}
					if e.FO.MaxRequestsPerMinute == 0 || e.FO.MaxRequestsPerMinute*w.replicas > dmf.DefaultRequestsPerMinute {
						t.Errorf("%s: export %s: fo.max_requests_per_minute %d × %d replicas: want at most %d", o, e.Name, e.FO.MaxRequestsPerMinute, w.replicas, dmf.DefaultRequestsPerMinute)
					}
				}
			case "sink":
				if len(cfg.Sinks) == 0 || len(cfg.Exports) > 0 {
					t.Errorf("%s: %s holds %d sinks and %d exports: want sinks only, so the sink needs no F&O secret", o, key, len(cfg.Sinks), len(cfg.Exports))
				}
			}

			// The Service, the PodDisruptionBudget and the ServiceMonitor.
			svcObj := find("Service", w.name)
			if svcObj == nil {
				t.Fatalf("no Service %s", w.name)
			}
			var svc service
			svcObj.decode(t, &svc)
			if !subset(svc.Spec.Selector, podLabels) {
				t.Errorf("%s: the selector %v does not select the pods of %s (%v)", svcObj, svc.Spec.Selector, o, podLabels)
			}
			svcPorts := map[string]bool{}
			for _, p := range svc.Spec.Ports {
				svcPorts[p.Name] = true
				if portOf(p.TargetPort) != w.port {
					t.Errorf("%s: port %s targets %v, want the container's %d", svcObj, p.Name, p.TargetPort, w.port)
				}
			}
			if pdbObj := find("PodDisruptionBudget", w.name); pdbObj == nil {
				t.Errorf("no PodDisruptionBudget %s", w.name)
			} else {
				var pdb selectorSpec
				pdbObj.decode(t, &pdb)
				if !pdb.Spec.Selector.matches(podLabels) {
					t.Errorf("%s does not select the pods of %s", pdbObj, o)
				}
			}
			monitored := false
			for _, smObj := range byKind["ServiceMonitor"] {
				var sm selectorSpec
				smObj.decode(t, &sm)
				if !sm.Spec.Selector.matches(svcObj.Metadata.Labels) {
					continue
				}
				for _, ep := range sm.Spec.Endpoints {
					if svcPorts[ep.Port] && ep.Path == "/metrics" {
						monitored = true
					}
				}
			}
			if !monitored {
				t.Errorf("no ServiceMonitor scrapes /metrics on a port of %s", svcObj)
			}

			// The binary serves the probes' paths and /metrics when started
			// with the container's arguments (the port chosen by the test).
			dir := t.TempDir()
			cfgFile := filepath.Join(dir, "dmfexport.yaml")
			if err := os.WriteFile(cfgFile, []byte(testConfig(dir)), 0o644); err != nil {
				t.Fatal(err)
			}
			args := slices.Clone(c.Args)
			args[slices.Index(args, "--listen")+1] = "127.0.0.1:0"
			cmd := exec.CommandContext(t.Context(), bin, args...)
			cmd.Env = append(os.Environ(), "DMFEXPORT_CONFIG="+cfgFile, "FO_TOKEN=dummy")
			cmd.Dir = dir
			s := startServing(t, cmd)
			s.awaitReady(t, probes["readiness"])
			for _, p := range slices.Sorted(maps.Values(probes)) {
				if code := s.get(t, p); code != 200 {
					t.Errorf("%s: GET %s = %d, want 200\n%s", o, p, code, s.output)
				}
			}
			if code := s.get(t, "/metrics"); code != 200 {
				t.Errorf("%s: GET /metrics = %d, want 200", o, code)
			}
			if w.command == "sink" {
				s.await(t, "consumer dialling its broker", func() bool { return strings.Contains(s.output.String(), "reconnecting") })
			}
			if code := s.stop(t); code != 0 {
				t.Errorf("%s: exited %d after SIGTERM, want 0\n%s", o, code, s.output)
			}
		})
	}
}
