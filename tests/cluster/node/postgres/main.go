// The entrypoint of the dev PostgreSQL image (no shell in it, so this small static binary
// does what a docker-entrypoint script would): on an empty data directory it runs initdb
// with the superuser password from POSTGRES_PASSWORD and lets every host in with
// scram-sha-256, then it replaces itself with postgres.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

func die(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pg-entry: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	bin := os.Getenv("PGBIN")
	data := os.Getenv("PGDATA")
	user := os.Getenv("POSTGRES_USER")
	password := os.Getenv("POSTGRES_PASSWORD")
	if bin == "" || data == "" {
		die("PGBIN and PGDATA must be set")
	}
	if user == "" {
		user = "postgres"
	}
	if _, err := os.Stat(filepath.Join(data, "PG_VERSION")); os.IsNotExist(err) {
		if password == "" {
			die("POSTGRES_PASSWORD must be set to initialise %s", data)
		}
		// initdb wants an empty directory it owns (an emptyDir is created by root).
		if err := os.MkdirAll(data, 0o700); err != nil {
			die("%v", err)
		}
		pw := filepath.Join(os.TempDir(), "pg-password")
		if err := os.WriteFile(pw, []byte(password+"\n"), 0o600); err != nil {
			die("%v", err)
		}
		cmd := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", user, "--pwfile", pw,
			"--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		err := cmd.Run()
		os.Remove(pw)
		if err != nil {
			die("initdb: %v", err)
		}
		hba, err := os.OpenFile(filepath.Join(data, "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			die("%v", err)
		}
		fmt.Fprintln(hba, "host all all all scram-sha-256")
		hba.Close()
	}
	args := []string{filepath.Join(bin, "postgres"), "-D", data, "-c", "listen_addresses=*", "-c", "unix_socket_directories=" + os.TempDir(), "-c", "jit=off"}
	if err := syscall.Exec(filepath.Join(bin, "postgres"), args, os.Environ()); err != nil {
		die("exec postgres: %v", err)
	}
}
