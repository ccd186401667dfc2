# The control plane's image: web (gunicorn), worker and beat share it.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN DEBUG=1 python manage.py collectstatic --noinput -v0
RUN useradd --system --uid 10001 gpucloud && chown -R gpucloud /app/var
USER gpucloud
EXPOSE 8000
CMD ["gunicorn", "gpucloud.wsgi", "-b", "0.0.0.0:8000", "-w", "4", "--timeout", "30", "--access-logfile", "-"]
