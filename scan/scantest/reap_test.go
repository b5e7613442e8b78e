package scantest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

func TestReapOrphans(t *testing.T) {
	if _, _, _, _, ok := procStat(os.Getpid()); !ok {
		t.Skip("no /proc")
	}
	saved := registry
	registry = t.TempDir()
	t.Cleanup(func() { registry = saved })
	// A process group that is not a scanner's: reaping must leave it alone.
	sleeper := exec.Command("sleep", "30")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := sleeper.Start(); err != nil {
		t.Skip(err)
	}
	defer func() {
		sleeper.Process.Kill()
		sleeper.Wait()
	}()
	pgid := sleeper.Process.Pid

	if err := register(pgid); err != nil {
		t.Fatal(err)
	}
	reapOrphans()
	if _, err := os.Stat(filepath.Join(registry, strconv.Itoa(pgid))); err != nil {
		t.Errorf("the registration of a live owner was removed: %v", err)
	}

	// The owner is gone: its start time does not match.
	if err := os.WriteFile(filepath.Join(registry, strconv.Itoa(pgid)), []byte(fmt.Sprintf("%d 1\n", os.Getpid())), 0o600); err != nil {
		t.Fatal(err)
	}
	reapOrphans()
	if _, err := os.Stat(filepath.Join(registry, strconv.Itoa(pgid))); !os.IsNotExist(err) {
		t.Errorf("the registration of a gone owner is still there: %v", err)
	}
	if _, state, _, _, ok := procStat(pgid); !ok || state == 'Z' {
		t.Error("reaping killed a process that is not a scanner")
	}
}
