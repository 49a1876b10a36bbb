"""test_startup.py - jwt-signerd refuses to start, with a clear message and a
non-zero exit, when the token login, a key, the configuration or the TLS
material is wrong; and keygen refuses to overwrite a key.
"""

import json
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def run_signerd(env, config, extra_env=None):
    return env.run([harness.signerd_path(), "--config", config], timeout_s=60, env=extra_env)


def failure(stderr):
    """The startup_failed log line."""
    for line in stderr.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if obj.get("event") == "startup_failed":
            return obj
    raise AssertionError("no startup_failed line in:\n" + stderr)


class Startup(unittest.TestCase):
    def setUp(self):
        self.env = harness.Env()
        self.env.setup()

    def tearDown(self):
        self.env.cleanup()

    def test_wrong_pin_refuses_to_start(self):
        with open(self.env.pin_file, "w", encoding="ascii") as f:
            f.write("000000wrong\n")
        os.chmod(self.env.pin_file, 0o600)
        rc, _, err = run_signerd(self.env, self.env.config_path)
        self.assertEqual(rc, 1)
        line = failure(err)
        self.assertEqual(line["reason"], "hsm.login")
        self.assertIn("CKR_PIN_INCORRECT", line["message"])
        self.assertNotIn("000000wrong", err)
        self.assertNotIn(self.env.pin, err)

    def test_missing_key_refuses_to_start(self):
        cfg = self.env.write_config("missing.yaml", keys=[
            harness.DEFAULT_KEY, {"name": "ghost", "label": "never-generated", "alg": "ES256"}],
            default_key=harness.DEFAULT_KEY["name"])
        rc, _, err = run_signerd(self.env, cfg)
        self.assertEqual(rc, 1)
        line = failure(err)
        self.assertIn("ghost", line["message"])
        self.assertIn("never-generated", line["message"])
        self.assertEqual(line["reason"], "hsm.key_not_found")

    def test_pin_from_environment(self):
        cfg = self.env.write_config("env.yaml", pin_env="JS_TEST_PIN")
        self.env.start(cfg)
        rc, out, err = self.env.sign("issuer-a", self.env.sample_claims())
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.env.stop(), 0)

    def test_pin_env_unset(self):
        cfg = self.env.write_config("env.yaml", pin_env="JS_TEST_PIN_UNSET")
        rc, _, err = run_signerd(self.env, cfg)
        self.assertEqual(rc, 1)
        self.assertIn("JS_TEST_PIN_UNSET", failure(err)["message"])

    def test_invalid_config_names_key_and_line(self):
        text = open(self.env.config_path, encoding="utf-8").read() + "colour: blue\n"
        cfg = self.env.write_raw_config(text, "bad.yaml")
        rc, _, err = run_signerd(self.env, cfg)
        self.assertEqual(rc, 1)
        msg = failure(err)["message"]
        self.assertIn("bad.yaml:", msg)
        self.assertIn("colour", msg)

    def test_pin_in_config_rejected(self):
        text = open(self.env.config_path, encoding="utf-8").read().replace(
            "pin_file: pin", "pin: '1234'")
        cfg = self.env.write_raw_config(text, "pin.yaml")
        rc, _, err = run_signerd(self.env, cfg)
        self.assertEqual(rc, 1)
        self.assertIn("PIN", failure(err)["message"])
        self.assertNotIn("1234", failure(err)["message"])

    def test_unknown_token_refuses_to_start(self):
        cfg = self.env.write_config("tok.yaml", hsm_token="pkcs11:token=no-such-token")
        rc, _, err = run_signerd(self.env, cfg)
        self.assertEqual(rc, 1)
        self.assertIn("no-such-token", failure(err)["message"])

    def test_missing_tls_file_refuses_to_start(self):
        cfg = self.env.write_config("tls.yaml", tls={"cert": "pki/nope.crt",
                                                     "key": "pki/server.key",
                                                     "client_ca": "pki/ca.crt"})
        rc, _, err = run_signerd(self.env, cfg)
        self.assertEqual(rc, 1)
        self.assertIn("nope.crt", err)

    def test_tls_file_with_nul_refuses_to_start(self):
        # gRPC takes PEM as a C string: a NUL would cut the file short without
        # a word (and the private key's tail would escape the wipe).
        bad = os.path.join(self.env.dir, "pki", "nul.crt")
        with open(os.path.join(self.env.dir, "pki", "server.crt"), "rb") as f:
            pem = f.read()
        with open(bad, "wb") as f:
            f.write(pem + b"\0trailing")
        cfg = self.env.write_config("tlsnul.yaml", tls={"cert": "pki/nul.crt",
                                                        "key": "pki/server.key",
                                                        "client_ca": "pki/ca.crt"})
        rc, _, err = run_signerd(self.env, cfg)
        self.assertEqual(rc, 1)
        self.assertIn("contains a NUL byte", err)
        self.assertEqual(failure(err)["reason"], "tls.read")

    def test_keygen_refuses_existing_label(self):
        rc, out, err = self.env.keygen(harness.DEFAULT_KEY["name"], check=False)
        self.assertEqual(rc, 1)
        self.assertIn("hsm.label_exists", err)
        self.assertEqual(out, "")

    def test_keygen_unknown_key_name(self):
        rc, _, err = self.env.keygen("not-in-config", check=False)
        self.assertEqual(rc, 1)
        self.assertIn("not-in-config", err)

    def test_usage_errors(self):
        rc, _, _ = self.env.run([harness.signerd_path()])
        self.assertEqual(rc, 2)
        rc, out, _ = self.env.run([harness.signerd_path(), "--help"])
        self.assertEqual(rc, 0)
        self.assertIn("keygen", out)

    def test_versions(self):
        """Every program prints the one project version (CMakeLists.txt)."""
        with open(os.path.join(harness.source_dir(), "CMakeLists.txt")) as f:
            m = re.search(r"project\(jwt-signer VERSION ([0-9.]+)", f.read())
        self.assertIsNotNone(m)
        for name, path in (("jwt-signerd", harness.signerd_path()),
                           ("jwt-sign", harness.sign_path()),
                           ("jwt-audit", harness.audit_path())):
            rc, out, err = self.env.run([path, "--version"])
            self.assertEqual((rc, out, err), (0, "%s %s\n" % (name, m.group(1)), ""), name)


if __name__ == "__main__":
    unittest.main(verbosity=2)
