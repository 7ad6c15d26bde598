// Package deploy holds example deployments (Docker Compose, Kubernetes);
// its test keeps them in step with the configuration.
package deploy_test

import (
	"io"
	"os"
	"regexp"
	"strings"
	"testing"

	"flag"
	"github.com/tusgate/tusgate/config"
)

// Every TUSGATE_ variable the examples set is a real setting, and every
// literal value they give parses.
func TestExamplesUseRealSettings(t *testing.T) {
	known := map[string]string{}
	config.Flags(io.Discard).VisitAll(func(f *flag.Flag) { known[config.EnvVar(f.Name)] = f.Name })
	envName := regexp.MustCompile(`TUSGATE_[A-Z0-9_]+`)
	for _, file := range []string{"docker-compose.yml", "kubernetes/tusgate.yaml"} {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		names := envName.FindAllString(string(raw), -1)
		if len(names) < 5 {
			t.Fatalf("%s: found %d TUSGATE_ variables, want the example's settings", file, len(names))
		}
		for _, name := range names {
			if _, ok := known[name]; !ok {
				t.Errorf("%s: %s is not a tusgate setting", file, name)
			}
		}
	}
	// The Kubernetes example's literal values form a valid configuration.
	raw, err := os.ReadFile("kubernetes/tusgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	literal := regexp.MustCompile(`\{name: (TUSGATE_[A-Z0-9_]+), value: "([^"]*)"\}`)
	env := map[string]string{}
	for _, m := range literal.FindAllStringSubmatch(string(raw), -1) {
		env[m[1]] = m[2]
	}
	if len(env) < 5 {
		t.Fatalf("found %d literal settings in the Kubernetes example", len(env))
	}
	if _, err := config.Parse(nil, func(k string) string { return env[k] }, io.Discard); err != nil {
		t.Errorf("the Kubernetes example's settings do not parse: %v", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
}
