"""The test deployment's secrets and numbers: known values, so a test can look for them
in logs and bodies (they must never appear there)."""

WEBHOOK_TOKEN = "test-webhook-token-5f1c"
API_TOKEN = "test-api-token-9a7e"
OPERATOR_KEY = "test-operator-key-3b8d6e"
TWILIO_SID = "AC0123456789abcdef0123456789abcdef"
TWILIO_TOKEN = "test-twilio-auth-token-77c1"
TWILIO_NUMBER = "whatsapp:+14155238886"
PUBLIC_BASE_URL = "https://bot.example.com"
CONSOLE_SECRET = "test-console-session-secret-0c4f9a2e71"
WEBCHAT_SECRET = "test-webchat-secret-41d9a0"
