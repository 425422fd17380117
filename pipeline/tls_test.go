package pipeline_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// pki writes a CA, a server certificate for 127.0.0.1 and a client
// certificate into dir, and returns their paths.
type pki struct{ ca, serverCert, serverKey, clientCert, clientKey string }

func newPKI(t *testing.T, dir string) pki {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "largeforge test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "EC PRIVATE KEY", kder)
	}
	var p pki
	p.ca = write("ca.pem", "CERTIFICATE", caDER)
	p.serverCert, p.serverKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return p
}

func TestConnectTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := newPKI(t, t.TempDir())
	conf := pipeline.DefaultNATSConf + `
tls {
  cert_file: "` + p.serverCert + `"
  key_file: "` + p.serverKey + `"
  ca_file: "` + p.ca + `"
  verify: true
}
`
	e := pipelinetest.StartServerWith(t, pipeline.EmbeddedConfig{DataDir: t.TempDir(), Conf: []byte(conf)})
	url := e.ClientURL()
	tests := []struct {
		name    string
		cfg     pipeline.ConnConfig
		wantErr bool
	}{
		{name: "ca and client cert", cfg: pipeline.ConnConfig{URL: url, TLSCAFile: p.ca, TLSCertFile: p.clientCert, TLSKeyFile: p.clientKey}},
		{name: "skip verify and client cert", cfg: pipeline.ConnConfig{URL: url, TLSInsecureSkipVerify: true, TLSCertFile: p.clientCert, TLSKeyFile: p.clientKey}},
		{name: "server not trusted", cfg: pipeline.ConnConfig{URL: url, TLSCertFile: p.clientCert, TLSKeyFile: p.clientKey}, wantErr: true},
		{name: "no client cert", cfg: pipeline.ConnConfig{URL: url, TLSCAFile: p.ca}, wantErr: true},
		{name: "unknown ca", cfg: pipeline.ConnConfig{URL: url, TLSCAFile: p.clientCert, TLSCertFile: p.clientCert, TLSKeyFile: p.clientKey}, wantErr: true},
		{name: "missing cert file", cfg: pipeline.ConnConfig{URL: url, TLSCAFile: p.ca, TLSCertFile: "/nope.pem", TLSKeyFile: "/nope-key.pem"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := pipeline.Connect(ctx, tt.cfg, pipelinetest.Logger(t))
			if (err != nil) != tt.wantErr {
				t.Fatalf("Connect() = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, pipeline.ErrConnect) {
					t.Errorf("error %v does not wrap ErrConnect", err)
				}
				return
			}
			defer b.Close()
			if !b.Conn().TLSRequired() {
				t.Error("connection is not TLS")
			}
			if err := b.EnsureTopology(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}
