// Runs keyward's Argo CD health checks the way Argo CD does: the script in
// <group>/<kind>/health.lua under gopher-lua (Argo CD's Lua VM) with only the base,
// table, string and math libraries, the object as the global `obj`, against each case
// of health_test.yaml (Argo CD's own layout for resource_customizations), and checks
// that argocd-cm.yaml carries each script verbatim.
package argocd

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
	"gopkg.in/yaml.v3"
)

type healthTests struct {
	Tests []struct {
		HealthStatus struct {
			Status  string `yaml:"status"`
			Message string `yaml:"message"`
		} `yaml:"healthStatus"`
		InputPath string `yaml:"inputPath"`
	} `yaml:"tests"`
}

func TestHealthChecks(t *testing.T) {
	scripts, err := filepath.Glob("keyward.io/*/health.lua")
	if err != nil || len(scripts) == 0 {
		t.Fatalf("no health.lua found: %v", err)
	}
	for _, script := range scripts {
		dir := filepath.Dir(script)
		var cases healthTests
		readYAML(t, filepath.Join(dir, "health_test.yaml"), &cases)
		if len(cases.Tests) == 0 {
			t.Fatalf("%s: no tests", dir)
		}
		for _, test := range cases.Tests {
			t.Run(filepath.Join(dir, test.InputPath), func(t *testing.T) {
				var object map[string]interface{}
				readYAML(t, filepath.Join(dir, test.InputPath), &object)
				status, message := runHealth(t, script, object)
				if status != test.HealthStatus.Status || message != test.HealthStatus.Message {
					t.Errorf("got %s %q, want %s %q", status, message,
						test.HealthStatus.Status, test.HealthStatus.Message)
				}
			})
		}
	}
}

func TestConfigMapCarriesTheScripts(t *testing.T) {
	var configMap struct {
		Data map[string]string `yaml:"data"`
	}
	readYAML(t, "argocd-cm.yaml", &configMap)
	scripts, _ := filepath.Glob("keyward.io/*/health.lua")
	for _, script := range scripts {
		key := "resource.customizations.health.keyward.io_" + filepath.Base(filepath.Dir(script))
		want, err := os.ReadFile(script)
		if err != nil {
			t.Fatal(err)
		}
		if configMap.Data[key] != string(want) {
			t.Errorf("argocd-cm.yaml's %s differs from %s", key, script)
		}
	}
	if len(configMap.Data) != len(scripts) {
		t.Errorf("argocd-cm.yaml has %d keys for %d scripts", len(configMap.Data), len(scripts))
	}
}

func readYAML(t *testing.T, path string, into interface{}) {
	t.Helper()
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(text, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// runHealth evaluates script with obj set to object and returns hs.status, hs.message.
func runHealth(t *testing.T, script string, object map[string]interface{}) (string, string) {
	t.Helper()
	state := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer state.Close()
	for _, library := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
	} {
		state.Push(state.NewFunction(library.open))
		state.Push(lua.LString(library.name))
		state.Call(1, 0)
	}
	state.SetGlobal("obj", toLua(state, object))
	if err := state.DoFile(script); err != nil {
		t.Fatalf("%s: %v", script, err)
	}
	result, ok := state.Get(-1).(*lua.LTable)
	if !ok {
		t.Fatalf("%s returned %s, not a table", script, state.Get(-1).Type())
	}
	return lua.LVAsString(result.RawGetString("status")), lua.LVAsString(result.RawGetString("message"))
}

// toLua converts a decoded YAML value as Argo CD converts an object: maps to tables
// with string keys, lists to tables indexed from 1, every number to a Lua number.
func toLua(state *lua.LState, value interface{}) lua.LValue {
	switch value := value.(type) {
	case map[string]interface{}:
		table := state.NewTable()
		for key, item := range value {
			table.RawSetString(key, toLua(state, item))
		}
		return table
	case []interface{}:
		table := state.NewTable()
		for index, item := range value {
			table.RawSetInt(index+1, toLua(state, item))
		}
		return table
	case string:
		return lua.LString(value)
	case bool:
		return lua.LBool(value)
	case int:
		return lua.LNumber(value)
	case float64:
		return lua.LNumber(value)
	case time.Time:
		// As JSON carries it: unquoted YAML timestamps decode as times.
		return lua.LString(value.UTC().Format(time.RFC3339))
	case nil:
		return lua.LNil
	default:
		panic(fmt.Sprintf("a YAML value of type %T", value))
	}
}
