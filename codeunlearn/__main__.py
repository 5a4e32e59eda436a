from codeunlearn.cli.main import app

app()
