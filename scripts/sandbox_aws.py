"""AWS-side set-up the sandbox's examples expect, done against moto with boto3 (from the
moto venv): the Lambda execution role (`role`), the function's code object (`code`) and an AMI id
moto knows (`ami`)."""

import io
import json
import os
import sys
import zipfile

import boto3

endpoint = os.environ["AWS_ENDPOINT_URL"]
region = os.environ.get("AWS_DEFAULT_REGION", "eu-west-1")


def client(service):
    return boto3.client(service, endpoint_url=endpoint, region_name=region,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def role():
    iam = client("iam")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
             "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    try:
        iam.create_role(RoleName="kaws-example-hello", AssumeRolePolicyDocument=json.dumps(trust))
    except iam.exceptions.EntityAlreadyExistsException:
        pass


def code():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("app.py", "def handler(event, context):\n    return {'hello': 'kaws'}\n")
    client("s3").put_object(Bucket="kaws-example-function-code", Key="app.zip", Body=buf.getvalue())


def ami():
    images = client("ec2").describe_images()["Images"]
    print(next(i["ImageId"] for i in images if len(i["ImageId"]) <= 21))


{"role": role, "code": code, "ami": ami}[sys.argv[1]]()
