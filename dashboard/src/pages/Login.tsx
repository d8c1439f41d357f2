import { useState } from "preact/hooks";
import { login, verifyCode } from "../api";
import { ErrorBox } from "../ui";

export function Login() {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [code, setCode] = useState("");
  const [temp, setTemp] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (event: Event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      if (temp) await verifyCode(temp, code.trim());
      else {
        const result = await login(username, password);
        if (!result.done) setTemp(result.temp_token);
      }
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <main class="login">
      <form onSubmit={submit} class="card">
        <h1>MCC</h1>
        {temp ? (
          <label>Code from your authenticator
            <input data-testid="login-totp" inputMode="numeric" autoComplete="one-time-code" maxLength={6}
                   pattern="[0-9]{6}" required value={code} autoFocus
                   onInput={(e) => setCode((e.target as HTMLInputElement).value)} />
          </label>
        ) : (
          <>
            <label>Username
              <input data-testid="login-username" autoComplete="username" required value={username} autoFocus
                     onInput={(e) => setUsername((e.target as HTMLInputElement).value)} />
            </label>
            <label>Password
              <input data-testid="login-password" type="password" autoComplete="current-password" required
                     value={password} onInput={(e) => setPassword((e.target as HTMLInputElement).value)} />
            </label>
          </>
        )}
        <ErrorBox error={error} testid="login-error" />
        <button class="primary" type="submit" data-testid="login-submit" disabled={busy}>
          {temp ? "Verify" : "Log in"}
        </button>
      </form>
    </main>
  );
}
