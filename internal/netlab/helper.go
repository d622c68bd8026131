package netlab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
)

// Environment variables that turn a re-executed binary into a helper.
const (
	helperRoleEnv = "ZONELB_NETLAB_ROLE"
	helperArgsEnv = "ZONELB_NETLAB_ARGS"
)

// PauseRole is the built-in helper that does nothing until it is
// signalled: a pod's sandbox process, holding the pod's network namespace
// and cgroup populated as Kubernetes' pause container does.
const PauseRole = "netlab-pause"

// Helper is the body of a helper process. ctx ends on SIGTERM or SIGINT;
// args is the JSON the parent passed to HelperCommand. The helper owns
// os.Stdin and os.Stdout; os.Stderr goes wherever the parent sent it.
type Helper func(ctx context.Context, args []byte) error

// Helpers maps role names to their bodies.
type Helpers map[string]Helper

// RunHelpers returns at once unless this process was started by
// HelperCommand; then it runs the helper for its role and exits with 0 on
// success, 1 on error, 2 on an unknown role. Call it first thing in main or
// TestMain, before anything else starts.
func RunHelpers(helpers Helpers) {
	role := os.Getenv(helperRoleEnv)
	if role == "" {
		return
	}
	os.Exit(runHelper(role, helpers))
}

func runHelper(role string, helpers Helpers) int {
	h, ok := helpers[role]
	if role == PauseRole {
		h, ok = pause, true
	}
	if !ok {
		fmt.Fprintf(os.Stderr, "netlab: unknown helper role %q\n", role)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := h(ctx, []byte(os.Getenv(helperArgsEnv))); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", role, err)
		return 1
	}
	return 0
}

// HelperCommand returns a command that re-executes this binary as the
// helper role, with args marshalled to JSON. Start it with Node.Start or
// Pod.Start to place it.
func HelperCommand(role string, args any) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	js, err := json.Marshal(args)
	if err != nil {
		return nil, fmt.Errorf("helper %s: marshal args: %w", role, err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), helperRoleEnv+"="+role, helperArgsEnv+"="+string(js))
	return cmd, nil
}

// pause waits for SIGTERM or SIGINT (or the owner's death: Pdeathsig).
func pause(ctx context.Context, _ []byte) error {
	<-ctx.Done()
	return nil
}
