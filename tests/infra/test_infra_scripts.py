"""infra/create.sh, cw-alarms.sh and destroy.sh against the emulator, told as two stories.

The deployment: create.sh with the EKS half forced on (SKIP_EKS=0, through the stand-ins for
eksctl, kubectl and docker), create.sh again (now with CONSUMER_AUTH=access-keys), destroy.sh.
The emulator's default path, alongside: create.sh (SKIP_EKS=1), a hand edit of the Lambda's
code, create.sh again, destroy.sh, and destroy.sh once more on the now clean account.
The scripts run once per module (about a minute in all); each test checks one part.
"""

import io
import json
import os
import re
import shutil
import subprocess
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from botocore.exceptions import ClientError
from infra_harness import (
    INFRA,
    ROOT,
    STUBS,
    VENV_BIN,
    flaky_aws,
    run_script,
    script_env,
    settings_from,
)

ACCOUNT = "123456789012"
REGION = "us-east-1"
IMAGE_TAG = "test-1234abc"
ALARM_EMAIL = "oncall@example.com"
SERVICES = ["s3", "sqs", "sns", "lambda", "iam", "logs", "cloudwatch", "ecr"]
SERVICES += ["resourcegroupstaggingapi"]


@dataclass
class Names:
    project: str

    def __post_init__(self):
        p = self.project
        self.bucket = f"{p}-{ACCOUNT}-{REGION}"
        self.bucket_arn = f"arn:aws:s3:::{self.bucket}"
        self.topic_arn = f"arn:aws:sns:{REGION}:{ACCOUNT}:{p}-uploads"
        self.alarm_topic_arn = f"arn:aws:sns:{REGION}:{ACCOUNT}:{p}-alarms"
        self.queue = f"{p}-thumbnails"
        self.dlq = f"{p}-thumbnails-dlq"
        self.queue_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{self.queue}"
        self.dlq_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{self.dlq}"
        self.function = f"{p}-publish"
        self.function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function}"
        self.role = f"{p}-publish-role"
        self.log_group = f"/aws/lambda/{self.function}"
        self.alarms = [f"{p}-lambda-errors", f"{p}-dlq-not-empty", f"{p}-queue-stalled"]
        self.ecr_repo = f"{p}-consumer"
        self.ecr_uri = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{self.ecr_repo}"
        self.consumer_policy_arn = f"arn:aws:iam::{ACCOUNT}:policy/{p}-consumer"
        self.consumer_user = f"{p}-consumer"


@dataclass
class Story:
    names: Names
    stub_log: Path
    first: subprocess.CompletedProcess = None
    second: subprocess.CompletedProcess = None
    destroyed: subprocess.CompletedProcess = None
    after_first: dict = field(default_factory=dict)
    after_second: dict = field(default_factory=dict)
    log_after_first: str = ""
    log_after_second: str = ""
    log_of_destroy: str = ""
    lambda_specs: list = field(default_factory=list)
    object_versions: int = 0

    @property
    def stub_state(self) -> Path:
        return Path(f"{self.stub_log}.d")


def snapshot(aws, n: Names) -> dict:
    """What a user would look at after create.sh, with the fields a re-run must not change."""
    s3, sqs, sns, lam, iam = aws("s3"), aws("sqs"), aws("sns"), aws("lambda"), aws("iam")
    queue_url = sqs.get_queue_url(QueueName=n.queue)["QueueUrl"]
    dlq_url = sqs.get_queue_url(QueueName=n.dlq)["QueueUrl"]

    def attributes(url):
        return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]

    try:
        bucket_policy = s3.get_bucket_policy(Bucket=n.bucket)["Policy"]
    except ClientError as e:
        bucket_policy = e.response["Error"]["Code"]
    function = lam.get_function_configuration(FunctionName=n.function)
    cloudwatch = aws("cloudwatch")
    alarms = cloudwatch.describe_alarms(AlarmNames=n.alarms)["MetricAlarms"]
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=n.topic_arn)["Subscriptions"]
    for subscription in subscriptions:
        subscription["Attributes"] = sns.get_subscription_attributes(
            SubscriptionArn=subscription["SubscriptionArn"]
        )["Attributes"]
    policy = iam.get_policy(PolicyArn=n.consumer_policy_arn)["Policy"]
    try:
        user = {
            "policies": iam.list_attached_user_policies(UserName=n.consumer_user)[
                "AttachedPolicies"
            ],
            "keys": iam.list_access_keys(UserName=n.consumer_user)["AccessKeyMetadata"],
        }
    except ClientError:
        user = None
    return {
        "queue_url": queue_url,
        "dlq_url": dlq_url,
        "queue": attributes(queue_url),
        "dlq": attributes(dlq_url),
        "queue_tags": sqs.list_queue_tags(QueueUrl=queue_url).get("Tags", {}),
        "subscriptions": subscriptions,
        "topic": sns.get_topic_attributes(TopicArn=n.topic_arn)["Attributes"]["TopicArn"],
        "public_access": s3.get_public_access_block(Bucket=n.bucket)[
            "PublicAccessBlockConfiguration"
        ],
        "encryption": s3.get_bucket_encryption(Bucket=n.bucket)[
            "ServerSideEncryptionConfiguration"
        ]["Rules"],
        "bucket_policy": bucket_policy,
        "bucket_tags": s3.get_bucket_tagging(Bucket=n.bucket)["TagSet"],
        "notification": s3.get_bucket_notification_configuration(Bucket=n.bucket).get(
            "LambdaFunctionConfigurations", []
        ),
        "function": {
            k: function.get(k)
            for k in (
                "FunctionArn",
                "Runtime",
                "Handler",
                "Role",
                "Timeout",
                "MemorySize",
                "Environment",
                "CodeSha256",
                "LastModified",
            )
        },
        "function_tags": lam.list_tags(Resource=n.function_arn)["Tags"],
        "function_policy": json.loads(lam.get_policy(FunctionName=n.function)["Policy"]),
        "failure_destination": {
            k: v
            for k, v in lam.get_function_event_invoke_config(FunctionName=n.function).items()
            if k != "ResponseMetadata"
        },
        "role": iam.get_role(RoleName=n.role)["Role"],
        "role_policy": iam.get_role_policy(RoleName=n.role, PolicyName=f"{n.function}-publish")[
            "PolicyDocument"
        ],
        "log_group": aws("logs").describe_log_groups(logGroupNamePrefix=n.log_group)["logGroups"],
        # A re-put of the same alarm moves only its "updated" timestamps.
        "alarms": sorted(
            ({k: v for k, v in a.items() if not k.endswith("UpdatedTimestamp")} for a in alarms),
            key=lambda a: a["AlarmName"],
        ),
        "alarm_tags": {
            a["AlarmName"]: cloudwatch.list_tags_for_resource(ResourceARN=a["AlarmArn"])["Tags"]
            for a in alarms
        },
        "alarm_subscriptions": [
            (s["Protocol"], s["Endpoint"])
            for s in sns.list_subscriptions_by_topic(TopicArn=n.alarm_topic_arn)["Subscriptions"]
        ],
        "dashboard": cloudwatch.get_dashboard(DashboardName=n.project)["DashboardBody"],
        "ecr": aws("ecr").describe_repositories(repositoryNames=[n.ecr_repo])["repositories"],
        "consumer_policy": iam.get_policy_version(
            PolicyArn=policy["Arn"], VersionId=policy["DefaultVersionId"]
        )["PolicyVersion"]["Document"],
        "consumer_user": user,
        "tagged": sorted(
            r["ResourceARN"]
            for r in aws("resourcegroupstaggingapi").get_resources(
                TagFilters=[{"Key": "project", "Values": [n.project]}]
            )["ResourceTagMappingList"]
        ),
    }


def leave_things_behind(aws, n: Names) -> int:
    """What use leaves for destroy.sh: versions and a delete marker, the add-on's log group."""
    s3 = aws("s3")
    s3.put_bucket_versioning(Bucket=n.bucket, VersioningConfiguration={"Status": "Enabled"})
    for body in (b"one", b"two"):
        s3.put_object(Bucket=n.bucket, Key="thumbnails/a b+c.jpg", Body=body)
    s3.put_object(Bucket=n.bucket, Key="thumbnails/gone.jpg", Body=b"x")
    s3.delete_object(Bucket=n.bucket, Key="thumbnails/gone.jpg")
    # What the cluster's CloudWatch add-on leaves: its log groups outlive the cluster.
    aws("logs").create_log_group(logGroupName=f"/aws/containerinsights/{n.project}/application")
    return 4  # two versions of a b+c.jpg, one of gone.jpg, its delete marker


def tell_story(aws, project: str, folder: Path) -> Story:
    """create (EKS half on), create again (now CONSUMER_AUTH=access-keys), destroy."""
    from moto.awslambda.models import LambdaBackend

    story = Story(names=Names(project), stub_log=folder / "stubs.log")
    eks = script_env(
        project, story.stub_log, SKIP_EKS="0", IMAGE_TAG=IMAGE_TAG, ALARM_EMAIL=ALARM_EMAIL
    )
    flaky = dict(eks, PATH=f"{flaky_aws(folder / 'flaky')}:{eks['PATH']}")

    # moto drops LoggingConfig from what it stores: record what create-function asked for.
    original = LambdaBackend.create_function

    def recording(backend, spec):
        if spec["FunctionName"] == story.names.function:
            story.lambda_specs.append(spec)
        return original(backend, spec)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LambdaBackend, "create_function", recording)
        story.first = run_script("create.sh", flaky)
    story.after_first = snapshot(aws, story.names)
    story.log_after_first = story.stub_log.read_text()

    story.second = run_script("create.sh", dict(eks, CONSUMER_AUTH="access-keys"))
    story.after_second = snapshot(aws, story.names)
    story.log_after_second = story.stub_log.read_text()[len(story.log_after_first) :]

    story.object_versions = leave_things_behind(aws, story.names)
    story.destroyed = run_script("destroy.sh", eks)
    story.log_of_destroy = story.stub_log.read_text()[
        len(story.log_after_first) + len(story.log_after_second) :
    ]
    return story


@dataclass
class LocalStory:
    """The emulator's default path (SKIP_EKS=1), which `make up` style callers take."""

    names: Names
    stub_log: Path
    first: subprocess.CompletedProcess = None
    second: subprocess.CompletedProcess = None
    destroyed: subprocess.CompletedProcess = None
    destroyed_again: subprocess.CompletedProcess = None
    stubs_called: bool = False
    code: dict = field(default_factory=dict)


def zip_of(source: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", source)
    return buffer.getvalue()


def tell_local_story(aws, project: str, folder: Path) -> LocalStory:
    """create, someone hand-edits the Lambda's code, create again, destroy, destroy again."""
    story = LocalStory(names=Names(project), stub_log=folder / "local-stubs.log")
    env = script_env(project, story.stub_log)
    lam = aws("lambda")

    def code():
        return lam.get_function_configuration(FunctionName=story.names.function)["CodeSha256"]

    story.first = run_script("create.sh", env)
    story.stubs_called = story.stub_log.exists()
    story.code["created"] = code()
    lam.update_function_code(
        FunctionName=story.names.function, ZipFile=zip_of("def handler(e, c):\n    pass\n")
    )
    story.code["hand-edited"] = code()
    story.second = run_script("create.sh", env)
    story.code["after second run"] = code()
    story.destroyed = run_script("destroy.sh", env)
    # Again, now on a clean account, with the EKS half on: nothing to find there either.
    story.destroyed_again = run_script("destroy.sh", dict(env, SKIP_EKS="0"))
    return story


@pytest.fixture(scope="module")
def stories(moto_endpoint, aws, project, tmp_path_factory):
    """Both stories at once (they share nothing): the emulator runs each script's calls."""
    folder = tmp_path_factory.mktemp("infra")
    for service in SERVICES:  # boto3 builds clients unsafely across threads
        aws(service)
    with ThreadPoolExecutor(max_workers=1) as pool:
        local = pool.submit(tell_local_story, aws, f"{project}-local", folder)
        eks = tell_story(aws, project, folder)
        return eks, local.result()


@pytest.fixture(scope="module")
def story(stories) -> Story:
    return stories[0]


@pytest.fixture(scope="module")
def local_story(stories) -> LocalStory:
    return stories[1]


def calls(log: str, tool: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith(f"{tool} ")]


# ---- create.sh: the serverless half ----------------------------------------------------------


def test_create_prints_the_settings_a_local_consumer_needs(story):
    settings = settings_from(story.first.stdout)
    n = story.names
    assert settings["AWS_REGION"] == REGION
    assert settings["BUCKET_NAME"] == n.bucket
    assert settings["QUEUE_URL"] == story.after_first["queue_url"]
    assert settings["DLQ_URL"] == story.after_first["dlq_url"]
    assert settings["SNS_TOPIC_ARN"] == n.topic_arn
    assert settings["LAMBDA_NAME"] == n.function
    assert settings["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")


def test_bucket_blocks_public_access_is_encrypted_and_tagged(story):
    state = story.after_first
    assert state["public_access"] == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    assert state["encryption"][0]["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "AES256"
    }
    assert {"Key": "project", "Value": story.names.project} in state["bucket_tags"]


def test_bucket_policy_denies_plain_http_but_is_not_applied_on_a_plain_http_endpoint(story):
    # The emulator's endpoint is http://: with the policy on, every object request would fail.
    assert "TLS-only bucket policy not applied" in story.first.stderr
    assert story.after_first["bucket_policy"] == "NoSuchBucketPolicy"
    rendered = subprocess.run(
        [
            "bash",
            "-c",
            f'source "{INFRA}/lib.sh" && init && render "$0"',
            str(INFRA / "iam-policies" / "bucket-policy.json"),
        ],
        env=script_env(story.names.project, story.stub_log),
        capture_output=True,
        text=True,
        check=True,
    )
    (statement,) = json.loads(rendered.stdout)["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Principal"] == "*"
    assert statement["Action"] == "s3:*"
    assert statement["Resource"] == [story.names.bucket_arn, f"{story.names.bucket_arn}/*"]
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_queue_redrives_to_the_dlq_and_outlives_nothing(story):
    queue, dlq = story.after_first["queue"], story.after_first["dlq"]
    redrive = json.loads(queue["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == story.names.dlq_arn
    assert int(redrive["maxReceiveCount"]) == 5
    assert queue["VisibilityTimeout"] == "120"
    assert queue["ReceiveMessageWaitTimeSeconds"] == "20"
    assert queue["MessageRetentionPeriod"] == str(4 * 24 * 3600)
    assert dlq["MessageRetentionPeriod"] == str(14 * 24 * 3600)
    assert queue["SqsManagedSseEnabled"] == dlq["SqsManagedSseEnabled"] == "true"
    assert story.after_first["queue_tags"] == {"project": story.names.project}


def test_only_the_uploads_topic_may_send_to_the_queue(story):
    (statement,) = json.loads(story.after_first["queue"]["Policy"])["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Service": "sns.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Resource"] == story.names.queue_arn
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": story.names.topic_arn}}


def test_queue_is_subscribed_once_with_raw_delivery(story):
    (subscription,) = story.after_first["subscriptions"]
    assert subscription["Protocol"] == "sqs"
    assert subscription["Endpoint"] == story.names.queue_arn
    assert subscription["Attributes"]["RawMessageDelivery"] == "true"


def test_lambda_runs_the_handler_with_json_logs_and_its_own_role(story):
    function = story.after_first["function"]
    n = story.names
    assert function["Runtime"] == "python3.12"
    assert function["Handler"] == "handler.handler"
    assert function["Timeout"] == 30
    assert function["MemorySize"] == 128
    assert (
        function["Role"]
        == story.after_first["role"]["Arn"]
        == f"arn:aws:iam::{ACCOUNT}:role/{n.role}"
    )
    assert function["Environment"]["Variables"] == {
        "SNS_TOPIC_ARN": n.topic_arn,
        "RAW_PREFIX": "raw-images/",
    }
    assert story.after_first["function_tags"] == {"project": n.project}
    (spec,) = story.lambda_specs
    assert spec["LoggingConfig"] == {"LogFormat": "JSON"}


def test_create_function_is_retried_while_the_new_role_cannot_be_assumed(story):
    assert "cannot be assumed yet" in story.first.stderr
    assert story.after_first["function"]["FunctionArn"] == story.names.function_arn


def test_lambda_may_publish_to_its_topic_and_log_to_its_group_only(story):
    publish, dead_letter, logs = story.after_first["role_policy"]["Statement"]
    assert (publish["Action"], publish["Resource"]) == ("sns:Publish", story.names.topic_arn)
    dlq_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{story.names.dlq}"
    assert (dead_letter["Action"], dead_letter["Resource"]) == ("sqs:SendMessage", dlq_arn)
    group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{story.names.log_group}"
    assert logs["Resource"] == [group, f"{group}:*"]
    assert all(action.startswith("logs:") for action in logs["Action"])
    (log_group,) = story.after_first["log_group"]
    assert log_group["retentionInDays"] == 14


def test_events_the_lambda_still_fails_on_after_its_retries_go_to_the_dlq(story):
    config = story.after_first["failure_destination"]
    assert config["MaximumRetryAttempts"] == 2
    dlq_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{story.names.dlq}"
    assert config["DestinationConfig"]["OnFailure"]["Destination"] == dlq_arn


def test_only_this_bucket_in_this_account_may_invoke_the_lambda(story):
    (statement,) = story.after_first["function_policy"]["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "lambda:InvokeFunction"
    assert statement["Condition"]["ArnLike"]["AWS:SourceArn"] == story.names.bucket_arn
    assert statement["Condition"]["StringEquals"]["AWS:SourceAccount"] == ACCOUNT


def test_bucket_notifies_the_lambda_of_uploads_under_raw_images_only(story):
    (config,) = story.after_first["notification"]
    assert config["LambdaFunctionArn"] == story.names.function_arn
    assert config["Events"] == ["s3:ObjectCreated:*"]
    assert config["Filter"]["Key"]["FilterRules"] == [{"Name": "prefix", "Value": "raw-images/"}]


def test_alarms_watch_lambda_errors_the_dlq_and_a_stalled_consumer(story):
    alarms = {a["AlarmName"]: a for a in story.after_first["alarms"]}
    p = story.names.project
    expected = {
        f"{p}-lambda-errors": ("AWS/Lambda", "Errors", "Sum", 1.0, story.names.function),
        f"{p}-dlq-not-empty": (
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            "Maximum",
            1.0,
            story.names.dlq,
        ),
        f"{p}-queue-stalled": (
            "AWS/SQS",
            "ApproximateAgeOfOldestMessage",
            "Maximum",
            300.0,
            story.names.queue,
        ),
    }
    for name, (namespace, metric, statistic, threshold, dimension) in expected.items():
        alarm = alarms[name]
        assert (alarm["Namespace"], alarm["MetricName"]) == (namespace, metric)
        assert (alarm["Statistic"], alarm["Threshold"]) == (statistic, threshold)
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert alarm["Dimensions"][0]["Value"] == dimension
        assert alarm["AlarmActions"] == [story.names.alarm_topic_arn]
        assert alarm["AlarmDescription"]
        assert {"Key": "project", "Value": p} in story.after_first["alarm_tags"][name]
    assert story.after_first["alarm_subscriptions"] == [("email", ALARM_EMAIL)]
    widgets = json.loads(story.after_first["dashboard"])["widgets"]
    assert f"Lambda {story.names.function}" in [w["properties"]["title"] for w in widgets]
    assert "saved Logs Insights query skipped" in story.first.stderr


def test_everything_taggable_is_tagged_with_the_project(story):
    tagged = set(story.after_first["tagged"])
    n = story.names
    assert {
        n.bucket_arn,
        n.topic_arn,
        n.alarm_topic_arn,
        n.queue_arn,
        n.dlq_arn,
        n.function_arn,
    } <= tagged
    assert {a["AlarmArn"] for a in story.after_first["alarms"]} <= tagged


# ---- create.sh: the EKS half, through the stand-ins ------------------------------------------


def test_cluster_config_has_the_nodes_and_the_consumer_pod_identity(story):
    (create,) = [c for c in calls(story.log_after_first, "eksctl") if " create cluster" in c]
    assert re.fullmatch(r"eksctl create cluster -f \S+\.yaml", create)
    config = yaml.safe_load((story.stub_state / "cluster-config.yaml").read_text())
    assert config["apiVersion"] == "eksctl.io/v1alpha5"
    assert config["kind"] == "ClusterConfig"
    assert config["metadata"]["name"] == story.names.project
    assert config["metadata"]["region"] == REGION
    (nodes,) = config["managedNodeGroups"]
    assert (nodes["instanceType"], nodes["desiredCapacity"]) == ("t3.small", 1)
    addons = {a["name"]: a for a in config["addons"]}
    assert set(addons) == {"eks-pod-identity-agent", "amazon-cloudwatch-observability"}
    assert addons["amazon-cloudwatch-observability"]["useDefaultPodIdentityAssociations"]
    (association,) = config["iam"]["podIdentityAssociations"]
    assert association["namespace"] == "image-pipeline"
    assert association["serviceAccountName"] == "imgpipe-consumer"
    assert association["permissionPolicyARNs"] == [story.names.consumer_policy_arn]


def test_consumer_policy_grants_only_what_the_consumer_does(story):
    document = story.after_first["consumer_policy"]
    if isinstance(document, str):
        document = json.loads(document)
    grants = {}
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        resources = (
            statement["Resource"]
            if isinstance(statement["Resource"], list)
            else [statement["Resource"]]
        )
        for action in actions:
            grants.setdefault(action, set()).update(resources)
    bucket, queue, dlq = story.names.bucket_arn, story.names.queue_arn, story.names.dlq_arn
    assert grants == {
        "s3:GetObject": {f"{bucket}/raw-images/*", f"{bucket}/thumbnails/*"},
        "s3:PutObject": {f"{bucket}/thumbnails/*"},
        "sqs:ReceiveMessage": {queue},
        "sqs:DeleteMessage": {queue},
        "sqs:ChangeMessageVisibility": {queue},
        "sqs:GetQueueAttributes": {queue, dlq},
        "sqs:SendMessage": {dlq},
        "sqs:GetQueueUrl": {dlq},
    }


def test_image_is_built_and_pushed_to_ecr(story):
    docker = calls(story.log_after_first, "docker")
    registry = story.names.ecr_uri.split("/")[0]
    image = f"{story.names.ecr_uri}:{IMAGE_TAG}"
    assert f"docker login --username AWS --password-stdin {registry}" in docker
    assert f"docker build --tag {image} {ROOT}" in docker
    assert f"docker push {image}" in docker
    assert "stdin: <0 characters>" not in story.log_after_first  # the ECR token went in
    (repo,) = story.after_first["ecr"]
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}


def test_consumer_is_deployed_from_an_overlay_of_the_k8s_base(story):
    (apply,) = [
        c for c in calls(story.log_after_first, "kubectl") if c.startswith("kubectl apply -k")
    ]
    overlay_dir = Path(apply.split()[-1])
    kustomization = yaml.safe_load(
        (story.stub_state / "overlay-1" / "kustomization.yaml").read_text()
    )
    (base,) = kustomization["resources"]
    assert Path(overlay_dir, base).resolve() == ROOT / "k8s"
    assert kustomization["images"] == [
        {"name": "imgpipe-consumer", "newName": story.names.ecr_uri, "newTag": IMAGE_TAG}
    ]
    (generator,) = kustomization["configMapGenerator"]
    assert generator["name"] == "imgpipe-config"
    assert generator["behavior"] == "merge"
    assert dict(item.split("=", 1) for item in generator["literals"]) == {
        "BUCKET_NAME": story.names.bucket,
        "QUEUE_URL": story.after_first["queue_url"],
        "AWS_REGION": REGION,
    }


def test_overlay_merges_into_a_base_with_real_kustomize(story, tmp_path):
    kubectl = shutil.which("kubectl", path=str(Path("/usr/local/bin")) + ":/usr/bin:/bin")
    if kubectl is None:
        pytest.skip("no real kubectl to render kustomize with")
    base = tmp_path / "k8s"
    base.mkdir()
    (base / "kustomization.yaml").write_text(
        "namespace: image-pipeline\nresources: [deployment.yaml]\n"
        "configMapGenerator:\n  - name: imgpipe-config\n"
        "    literals: [BUCKET_NAME=x, QUEUE_URL=x, AWS_REGION=x, WORKERS=2]\n"
    )
    (base / "deployment.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: imgpipe-consumer}\n"
        "spec:\n  selector: {matchLabels: {app: c}}\n  template:\n"
        "    metadata: {labels: {app: c}}\n    spec:\n      containers:\n"
        "        - {name: consumer, image: imgpipe-consumer,"
        " envFrom: [{configMapRef: {name: imgpipe-config}}]}\n"
    )
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    text = (story.stub_state / "overlay-1" / "kustomization.yaml").read_text()
    (overlay / "kustomization.yaml").write_text(re.sub(r"  - \S+/k8s\n", "  - ../k8s\n", text))
    rendered = list(
        yaml.safe_load_all(
            subprocess.run(
                [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, check=True
            ).stdout
        )
    )
    config = next(o for o in rendered if o["kind"] == "ConfigMap")
    deployment = next(o for o in rendered if o["kind"] == "Deployment")
    assert config["data"] == {
        "BUCKET_NAME": story.names.bucket,
        "QUEUE_URL": story.after_first["queue_url"],
        "AWS_REGION": REGION,
        "WORKERS": "2",
    }
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
        f"{story.names.ecr_uri}:{IMAGE_TAG}"
    )


def test_by_default_the_consumer_has_no_long_lived_keys(story):
    assert "imgpipe-aws-keys" not in story.log_after_first
    assert "IAM user" not in story.first.stderr


# ---- create.sh again ---------------------------------------------------------------------------


def test_second_run_changes_nothing(story):
    first, second = story.after_first, story.after_second
    # Subscriptions (still one), CodeSha256, LastModified, ARNs, attributes; only the
    # access-keys user is new (CONSUMER_AUTH=access-keys on the second run).
    changed = {key for key in first if first[key] != second[key]}
    assert changed <= {"consumer_user", "tagged"}, {k: (first[k], second[k]) for k in changed}
    assert set(second["tagged"]) - set(first["tagged"]) <= {
        f"arn:aws:iam::{ACCOUNT}:user/{story.names.consumer_user}"
    }
    assert settings_from(story.second.stdout) == settings_from(story.first.stdout)
    assert "Lambda" in story.second.stderr and "is up to date" in story.second.stderr
    assert not [c for c in calls(story.log_after_second, "eksctl") if "create cluster" in c]
    assert not calls(story.log_after_second, "docker")  # the tag is already in ECR
    assert "created" not in story.second.stderr.replace("created IAM user", "")


def test_access_keys_mode_adds_an_iam_user_and_a_secret(story):
    n = story.names
    assert story.after_first["consumer_user"] is None
    user = story.after_second["consumer_user"]
    assert [p["PolicyArn"] for p in user["policies"]] == [n.consumer_policy_arn]
    (key,) = user["keys"]
    log = story.log_after_second
    assert "kubectl create secret generic imgpipe-aws-keys -n image-pipeline" in log
    assert f'stdin:   AWS_ACCESS_KEY_ID: "{key["AccessKeyId"]}"' in log
    assert "--from-literal" not in log  # the secret never sits on a command line


# ---- destroy.sh --------------------------------------------------------------------------------


def test_destroy_deletes_kubernetes_services_and_namespace_before_the_cluster(story):
    lines = story.log_of_destroy.splitlines()
    services = lines.index(
        "kubectl delete services --all --namespace image-pipeline --wait=true --timeout=300s"
    )
    namespace = next(i for i, c in enumerate(lines) if c.startswith("kubectl delete namespace"))
    cluster = next(i for i, c in enumerate(lines) if c.startswith("eksctl delete cluster"))
    assert services < namespace < cluster
    assert f"eksctl delete cluster --name {story.names.project} --region {REGION} --wait" in lines


def test_destroy_names_what_it_removed(story):
    removed = story.destroyed.stdout
    n = story.names
    for thing in [
        f"S3 notification {n.bucket}",
        "Kubernetes Services and namespace image-pipeline",
        f"EKS cluster {n.project}",
        f"IAM user {n.consumer_user}",
        f"IAM policy {n.project}-consumer",
        f"ECR repository {n.ecr_repo}",
        f"CloudWatch dashboard {n.project}",
        *(f"CloudWatch alarm {a}" for a in n.alarms),
        f"SNS topic {n.project}-alarms",
        f"Lambda function {n.function}",
        f"log group {n.log_group}",
        f"log group /aws/containerinsights/{n.project}/application",
        f"IAM role {n.role}",
        f"SQS queue {n.queue}",
        f"SQS queue {n.dlq}",
        "SNS subscription",
        f"SNS topic {n.project}-uploads",
        f"S3 bucket {n.bucket} ({story.object_versions} object versions)",
    ]:
        assert f"removed {thing}" in removed
    assert removed.rstrip().endswith(f"nothing left tagged project={n.project}")


def test_nothing_is_left_after_destroy(story, aws):
    n = story.names
    missing = [
        (lambda: aws("s3").head_bucket(Bucket=n.bucket), "404"),
        (lambda: aws("sns").get_topic_attributes(TopicArn=n.topic_arn), "NotFound"),
        (lambda: aws("sns").get_topic_attributes(TopicArn=n.alarm_topic_arn), "NotFound"),
        (lambda: aws("sqs").get_queue_url(QueueName=n.queue), "NonExistentQueue"),
        (lambda: aws("sqs").get_queue_url(QueueName=n.dlq), "NonExistentQueue"),
        (lambda: aws("lambda").get_function(FunctionName=n.function), "ResourceNotFound"),
        (lambda: aws("iam").get_role(RoleName=n.role), "NoSuchEntity"),
        (lambda: aws("iam").get_user(UserName=n.consumer_user), "NoSuchEntity"),
        (lambda: aws("iam").get_policy(PolicyArn=n.consumer_policy_arn), "NoSuchEntity"),
        (
            lambda: aws("ecr").describe_repositories(repositoryNames=[n.ecr_repo]),
            "RepositoryNotFound",
        ),
        (lambda: aws("cloudwatch").get_dashboard(DashboardName=n.project), "ResourceNotFound"),
    ]
    for call, error in missing:
        with pytest.raises(ClientError, match=error):
            call()
    assert aws("cloudwatch").describe_alarms(AlarmNames=n.alarms)["MetricAlarms"] == []
    for prefix in (n.log_group, f"/aws/containerinsights/{n.project}/"):
        assert aws("logs").describe_log_groups(logGroupNamePrefix=prefix)["logGroups"] == []
    assert not (story.stub_state / f"cluster-{n.project}").exists()


# ---- the emulator's default path ------------------------------------------------------------


def test_on_the_emulator_create_skips_the_eks_half_and_prints_the_settings(local_story):
    settings = settings_from(local_story.first.stdout)
    assert settings["BUCKET_NAME"] == local_story.names.bucket
    assert settings["LAMBDA_NAME"] == local_story.names.function
    assert "SKIP_EKS=1" in local_story.first.stderr
    assert not local_story.stubs_called  # eksctl, kubectl, docker


def test_second_run_puts_back_the_lambda_code_of_the_repository(local_story):
    code = local_story.code
    assert code["hand-edited"] != code["created"]
    assert code["after second run"] == code["created"]
    assert f"updated the code of Lambda {local_story.names.function}" in local_story.second.stderr


def test_destroy_on_the_emulator_leaves_nothing_tagged(local_story):
    assert f"removed S3 bucket {local_story.names.bucket}" in local_story.destroyed.stdout
    assert local_story.destroyed.stdout.rstrip().endswith(
        f"nothing left tagged project={local_story.names.project}"
    )


def test_destroy_on_a_clean_account_removes_nothing_and_succeeds(local_story):
    again = local_story.destroyed_again
    assert again.returncode == 0
    assert "removed" not in again.stdout
    assert f"nothing left tagged project={local_story.names.project}" in again.stdout
    assert local_story.stub_log.read_text().splitlines() == [
        f"eksctl get cluster --name {local_story.names.project} --region {REGION}"
    ]


# ---- guard rails (no full run needed) ----------------------------------------------------------


def test_create_refuses_a_bucket_it_did_not_make(moto_endpoint, aws, unique_name, tmp_path):
    bucket = f"{unique_name}-someone-elses"
    aws("s3").create_bucket(Bucket=bucket)
    env = script_env(unique_name, tmp_path / "stubs.log", BUCKET_NAME=bucket)
    result = run_script("create.sh", env, check=False)
    assert result.returncode == 1
    assert f"bucket {bucket} exists but is not tagged project={unique_name}" in result.stderr
    assert result.stdout == ""
    with pytest.raises(ClientError, match="NotFound"):
        aws("sns").get_topic_attributes(
            TopicArn=f"arn:aws:sns:{REGION}:{ACCOUNT}:{unique_name}-uploads"
        )


def lib_settings(*names: str, **env: str) -> list[str]:
    """The values lib.sh settles on for NAMES, given ENV on top of the test environment."""
    script = f'source "{INFRA}/lib.sh" && printf "%s\\n"' + "".join(f' "${n}"' for n in names)
    merged = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
    merged = merged | {"ENV_FILE": os.devnull} | env
    result = subprocess.run(["bash", "-c", script], env=merged, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_the_eks_half_is_skipped_by_default_on_the_emulator_only():
    assert lib_settings("SKIP_EKS", AWS_ENDPOINT_URL="http://127.0.0.1:1") == ["1"]
    assert lib_settings("SKIP_EKS") == ["0"]
    assert lib_settings("SKIP_EKS", AWS_ENDPOINT_URL="http://127.0.0.1:1", SKIP_EKS="0") == ["0"]


def test_env_file_fills_in_settings_but_never_overrides_the_environment(tmp_path):
    env_file = tmp_path / "settings.env"
    env_file.write_text(
        "# a comment\nPROJECT=from-file\nexport NODE_TYPE='t3.large'\n"
        'ALARM_EMAIL="ops@example.com"\nNODE_COUNT=$(rm -rf /)\n'
    )
    values = lib_settings(
        "PROJECT",
        "NODE_TYPE",
        "ALARM_EMAIL",
        "NODE_COUNT",
        "SNS_TOPIC_NAME",
        ENV_FILE=str(env_file),
        NODE_TYPE="m5.large",
    )
    assert values == [
        "from-file",
        "m5.large",
        "ops@example.com",
        "$(rm -rf /)",
        "from-file-uploads",
    ]


def test_missing_credentials_fail_with_one_clear_line(unique_name, tmp_path):
    env = script_env(unique_name, tmp_path / "stubs.log", AWS_EC2_METADATA_DISABLED="true")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        env.pop(name, None)
    result = run_script("destroy.sh", dict(env, SKIP_EKS="1"), check=False)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert "no usable AWS credentials" in line and "Unable to locate credentials" in line


def test_a_bad_setting_stops_before_any_aws_call(moto_endpoint, unique_name, tmp_path):
    env = script_env(unique_name, tmp_path / "stubs.log", CONSUMER_AUTH="keys-please")
    result = run_script("create.sh", env, check=False)
    assert result.returncode == 1
    assert "CONSUMER_AUTH must be pod-identity or access-keys" in result.stderr


def test_scripts_and_stand_ins_are_shellcheck_clean():
    scripts = sorted(INFRA.glob("*.sh")) + sorted(p for p in STUBS.iterdir() if p.is_file())
    result = subprocess.run(
        [str(VENV_BIN / "shellcheck"), "-x", *map(str, scripts)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
