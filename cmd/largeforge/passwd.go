package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/bcrypt"
)

// passwdCost is the bcrypt cost of the hashes passwd prints (nats-server's
// own `nats server passwd` uses 11).
const passwdCost = 11

func newPasswdCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "passwd < PASSWORD_FILE",
		Short: "Print the bcrypt hash of a password read from stdin, for deploy/nats-roles.conf",
		Long: `Read a password from the first line of stdin (never from the command line, which ps
shows) and print its bcrypt hash (cost 11), the value of an LF_<ROLE>_PASSWORD_HASH
variable of deploy/nats-roles.conf. The client keeps the password itself:
  export LF_ADMIN_PASSWORD_HASH=$(largeforge passwd < admin.pw)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			h, err := hashPassword(cmd.InOrStdin())
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), h)
			return nil
		},
	}
}

// hashPassword returns the bcrypt hash of the first line of r.
func hashPassword(r io.Reader) (string, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("read the password: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if strings.TrimSpace(pw) == "" {
		return "", fmt.Errorf("empty password on stdin")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), passwdCost)
	if err != nil {
		return "", fmt.Errorf("bcrypt: %w", err)
	}
	return string(h), nil
}
