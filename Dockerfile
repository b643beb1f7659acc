# The image of the web (Daphne) and worker services; the command chooses which.
FROM python:3.11-slim

# STATIC_ROOT: where collectstatic puts the files nginx serves (read by project/settings.py).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STATIC_ROOT=/app/staticfiles

WORKDIR /app

# requirements.txt installs this project itself (`-e .`), so what pyproject.toml packages
# must be here first. The rest comes later, so edits to project/ or chat/ keep this layer.
COPY requirements.txt pyproject.toml ./
COPY consumers/ consumers/
COPY channels_layer/ channels_layer/
RUN pip install -r requirements.txt

COPY . .

# Static files into the image; compose's one-shot migrate service copies them again into
# the volume nginx reads. The settings refuse to load without a strong key: this one is
# random, used for this step only and not kept in the image (no ENV).
RUN DJANGO_SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(50))')" \
    python manage.py collectstatic --noinput

# Run as an unprivileged user; it owns only the static files (so collectstatic can refresh
# a volume mounted there), not the code.
RUN useradd --system --create-home --uid 10001 app \
    && chown -R app:app /app/staticfiles
USER app

EXPOSE 8000
CMD ["daphne", "--proxy-headers", "-b", "0.0.0.0", "-p", "8000", "project.asgi:application"]
