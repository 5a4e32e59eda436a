from codeunlearn.cli import app

app()
