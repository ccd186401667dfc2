"""Sign-in (django-allauth), production security headers, trusted proxies, email."""

from __future__ import annotations

from gpucloud.env import env, env_bool, env_int
from gpucloud.settings.core import DEBUG, VAR_DIR

# Customers sign in with django-allauth (email + password, verified email; GitHub or
# Google when their keys are set). Operators also use /admin/login/.
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
AUTHENTICATION_BACKENDS = [
    # ModelBackend behind allauth's failed-login limits (the admin's and the API's login pages).
    "instances.access.backends.ThrottledModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = env("ACCOUNT_EMAIL_VERIFICATION", "mandatory")
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_LOGOUT_REDIRECT_URL = "/accounts/login/"
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[GPU Cloud] "
# Failed logins are throttled per IP and per account (allauth's rate limits).
ACCOUNT_RATE_LIMITS = {"login_failed": env("GPUCLOUD_LOGIN_FAILED_RATE", "10/m/ip,5/5m/key")}
SOCIALACCOUNT_PROVIDERS: dict[str, dict] = {}
for _provider in ("github", "google"):
    _client_id = env(f"{_provider.upper()}_CLIENT_ID")
    if _client_id:
        SOCIALACCOUNT_PROVIDERS[_provider] = {
            "APPS": [{"client_id": _client_id, "secret": env(f"{_provider.upper()}_CLIENT_SECRET"), "key": ""}],
            "SCOPE": ["user:email"] if _provider == "github" else ["profile", "email"],
        }
SOCIALACCOUNT_EMAIL_AUTHENTICATION = True

# Security in production (manage.py check --deploy).
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Reverse proxies of ours in front of Django (compose: 1). Each appends the address it
# saw to X-Forwarded-For: the client is the N-th from the right, and every per-address
# limit keys on it (else all count the proxy). 0: the header is ignored (REMOTE_ADDR).
GPUCLOUD_TRUSTED_PROXIES = env_int("GPUCLOUD_TRUSTED_PROXIES", 0)
ALLAUTH_TRUSTED_PROXY_COUNT = GPUCLOUD_TRUSTED_PROXIES

EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", default=False)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "GPU Cloud <noreply@localhost>")
# The file backend's folder (EMAIL_BACKEND=django.core.mail.backends.filebased.EmailBackend).
EMAIL_FILE_PATH = env("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
